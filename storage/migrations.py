"""The schema as a changelog: small named migrations applied in order, each recorded by name.

A migration is only ever added, never edited once released: a store created by an older
release is brought forward by applying the migrations it has not recorded. Each runs in
its own transaction together with the row that records it.

Plain columns hold what people filter and sum (run, round, verdict, cost, loss); JSON
columns hold free-form payloads (config, sampling parameters, judge usage, scores).
Natural keys make every write idempotent: writers insert with `ON CONFLICT DO NOTHING`.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb


def m001_initial(db: duckdb.DuckDBPyConnection) -> None:
    db.execute("""
        CREATE TABLE runs (
            run VARCHAR PRIMARY KEY,
            source VARCHAR NOT NULL,          -- 'pipeline' or 'import:<file name>'
            config JSON,                      -- the resolved run config, secrets removed
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        );
        CREATE TABLE rounds (
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            status VARCHAR NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'imported')),
            adapter_in VARCHAR,               -- the adapter that sampled this round (NULL: base model)
            adapter_out VARCHAR,              -- the adapter the next round starts from
            gate_decision VARCHAR CHECK (gate_decision IN ('promoted', 'rejected')),
            gate_reason VARCHAR,
            sample_s DOUBLE, judge_s DOUBLE, train_s DOUBLE, eval_s DOUBLE, wall_s DOUBLE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (run, round)
        );
        CREATE TABLE prompts (
            prompt_id VARCHAR PRIMARY KEY,    -- stable hash of (instruction, input)
            instruction VARCHAR NOT NULL,
            input VARCHAR NOT NULL,
            reference JSON,                   -- e.g. the expected answer a rule judge checks
            source VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        );
        CREATE TABLE responses (
            response_id VARCHAR PRIMARY KEY,  -- stable hash of (run, round, prompt_id, adapter_id, sample_index)
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            prompt_id VARCHAR NOT NULL,
            adapter_id VARCHAR,               -- NULL: base model or imported
            sample_index INTEGER NOT NULL,
            text VARCHAR NOT NULL,
            finish_reason VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            sampling JSON,                    -- sampling parameters
            source_id JSON,                   -- the record's `id` in an imported file
            source_index INTEGER,             -- the record's position in an imported file
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        );
        CREATE TABLE judgments (
            response_id VARCHAR NOT NULL,
            judge VARCHAR NOT NULL,           -- names the judge and its config, e.g. 'openai:gpt-4o@1f2e3d4c'
            verdict VARCHAR NOT NULL CHECK (verdict IN ('positive', 'negative', 'failed')),
            judgment VARCHAR,                 -- the judgment text (NULL for a bare positive)
            score DOUBLE,
            raw_reply VARCHAR,
            usage JSON,
            cost_usd DOUBLE,
            latency_s DOUBLE,
            error VARCHAR,                    -- why a 'failed' judgment failed
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (response_id, judge)
        );
        CREATE TABLE adapters (
            adapter_id VARCHAR PRIMARY KEY,
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,           -- the round whose triples trained it
            parent_id VARCHAR,                -- the adapter it was trained from (NULL: base model)
            path VARCHAR NOT NULL,
            status VARCHAR NOT NULL CHECK (status IN ('candidate', 'live', 'rejected', 'retired')),
            status_reason VARCHAR,
            scores JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        );
        CREATE TABLE training_steps (
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            step INTEGER NOT NULL,
            loss DOUBLE, l1 DOUBLE, l2 DOUBLE, flagged_frac DOUBLE, tokens_per_s DOUBLE, lr DOUBLE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (run, round, step)
        );
        CREATE TABLE flagged_tokens (
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,           -- the training round that flagged it
            response_id VARCHAR NOT NULL,
            token_index INTEGER NOT NULL,     -- position in the response's token ids
            token VARCHAR NOT NULL,
            p_aligned DOUBLE,                 -- p(y_t | x, j-)
            p_misaligned DOUBLE,              -- p(y_t | x) or p(y_t | x, j+)
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (run, round, response_id, token_index)
        );
        CREATE TABLE evaluations (
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            role VARCHAR NOT NULL CHECK (role IN ('candidate', 'incumbent')),
            suite VARCHAR NOT NULL,
            adapter_id VARCHAR,               -- NULL: base model
            score DOUBLE NOT NULL,
            n INTEGER NOT NULL,
            judge VARCHAR,
            details JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (run, round, role, suite)
        );
    """)


def m002_views(db: duckdb.DuckDBPyConnection) -> None:
    db.execute("""
        CREATE VIEW triples AS
        SELECT r.run, r.round, r.adapter_id AS adapter, p.instruction, p.input, r.text AS response,
               j.judgment, j.verdict, j.judge, j.created_at, r.response_id
        FROM responses r
        JOIN prompts p USING (prompt_id)
        JOIN judgments j USING (response_id)
        WHERE j.verdict IN ('positive', 'negative');

        CREATE VIEW round_summary AS
        WITH keys AS (SELECT run, round FROM rounds UNION SELECT run, round FROM responses),
        sampled AS (SELECT run, round, count(*) AS responses FROM responses GROUP BY ALL),
        judged AS (
            SELECT r.run, r.round,
                   count(*) FILTER (WHERE j.verdict = 'positive') AS positive,
                   count(*) FILTER (WHERE j.verdict = 'negative') AS negative,
                   count(*) FILTER (WHERE j.verdict = 'failed') AS failed,
                   sum(j.cost_usd) AS judge_cost_usd
            FROM judgments j JOIN responses r USING (response_id)
            GROUP BY ALL
        ),
        trained AS (
            SELECT run, round, count(*) AS train_steps, arg_max(loss, step) AS last_loss, avg(loss) AS mean_loss
            FROM training_steps GROUP BY ALL
        ),
        evaluated AS (
            SELECT run, round,
                   avg(score) FILTER (WHERE role = 'candidate') AS eval_candidate,
                   avg(score) FILTER (WHERE role = 'incumbent') AS eval_incumbent
            FROM evaluations GROUP BY ALL
        )
        SELECT k.run, k.round, rd.status, rd.adapter_in, rd.adapter_out, rd.gate_decision,
               coalesce(s.responses, 0) AS responses,
               coalesce(j.positive, 0) AS positive,
               coalesce(j.negative, 0) AS negative,
               coalesce(j.failed, 0) AS failed,
               j.positive / nullif(j.positive + j.negative, 0) AS positive_share,
               j.judge_cost_usd,
               t.train_steps, t.last_loss, t.mean_loss,
               e.eval_candidate, e.eval_incumbent,
               rd.sample_s, rd.judge_s, rd.train_s, rd.eval_s, rd.wall_s,
               rd.wall_s - coalesce(rd.sample_s, 0) - coalesce(rd.judge_s, 0)
                   - coalesce(rd.train_s, 0) - coalesce(rd.eval_s, 0) AS overhead_s,
               overhead_s / nullif(rd.wall_s, 0) AS overhead_share
        FROM keys k
        LEFT JOIN rounds rd USING (run, round)
        LEFT JOIN sampled s USING (run, round)
        LEFT JOIN judged j USING (run, round)
        LEFT JOIN trained t USING (run, round)
        LEFT JOIN evaluated e USING (run, round)
        ORDER BY k.run, k.round;
    """)


def m003_triples_score(db: duckdb.DuckDBPyConnection) -> None:
    """The judge's 1-10 score beside each verdict (NULL where the judge gives none), for DPO's pairs."""
    db.execute("""
        CREATE OR REPLACE VIEW triples AS
        SELECT r.run, r.round, r.adapter_id AS adapter, p.instruction, p.input, r.text AS response,
               j.judgment, j.verdict, j.judge, j.created_at, r.response_id, j.score
        FROM responses r
        JOIN prompts p USING (prompt_id)
        JOIN judgments j USING (response_id)
        WHERE j.verdict IN ('positive', 'negative');
    """)


def m004_dpo_steps(db: duckdb.DuckDBPyConnection) -> None:
    """DPO's per-step metrics beside CUT's (which stay NULL on a dpo step, as these do on a CUT step)."""
    db.execute("""
        ALTER TABLE training_steps ADD COLUMN reward_margin DOUBLE;
        ALTER TABLE training_steps ADD COLUMN reward_accuracy DOUBLE;
        ALTER TABLE training_steps ADD COLUMN pairs INTEGER;
    """)


def m005_judge_batches(db: duckdb.DuckDBPyConnection) -> None:
    """Batch API submissions, recorded before any wait, so a rerun polls them instead of paying twice."""
    db.execute("""
        CREATE TABLE judge_batches (
            batch_id VARCHAR PRIMARY KEY,
            judge VARCHAR NOT NULL,
            attempt INTEGER NOT NULL,
            request_ids VARCHAR[] NOT NULL,
            input_file_id VARCHAR NOT NULL,
            request_file VARCHAR,
            status VARCHAR NOT NULL,
            output_file_id VARCHAR,
            error_file_id VARCHAR,
            completed INTEGER,
            failed INTEGER,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        );
    """)


def m006_refinements(db: duckdb.DuckDBPyConnection) -> None:
    """ilf's refine step: each negative's response rewritten by the round's adapter given its judgment,
    the refinement judged by the same judge, and whether it was kept to train on; the step's seconds
    beside the others in `rounds` (`round_summary` counts them out of the overhead from m007 on)."""
    db.execute("""
        CREATE TABLE refinements (
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            response_id VARCHAR NOT NULL,     -- the negative response refined
            judge VARCHAR NOT NULL,           -- whose judgment asked for it; the same judge judged the refinement
            adapter_id VARCHAR,               -- the adapter that refined (NULL: base model)
            text VARCHAR NOT NULL,            -- the refinement y*
            finish_reason VARCHAR,
            sampling JSON,                    -- sampling parameters
            verdict VARCHAR NOT NULL CHECK (verdict IN ('positive', 'negative', 'failed')),
            judgment VARCHAR,                 -- the judge's words on the refinement
            score DOUBLE,
            error VARCHAR,                    -- why judging the refinement failed
            accepted BOOLEAN NOT NULL,        -- judged positive: (x, y*) is trained on
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (run, round, response_id, judge)
        );
        ALTER TABLE rounds ADD COLUMN refine_s DOUBLE;

        CREATE VIEW refined_triples AS
        SELECT f.run, f.round, f.adapter_id AS adapter, p.instruction, p.input, r.text AS response,
               j.judgment, f.text AS refinement, f.verdict, f.judgment AS refinement_judgment, f.score,
               f.accepted, f.judge, f.created_at, f.response_id
        FROM refinements f
        JOIN responses r USING (response_id)
        JOIN prompts p USING (prompt_id)
        JOIN judgments j ON j.response_id = f.response_id AND j.judge = f.judge;
    """)


def m007_adapter_checks(db: duckdb.DuckDBPyConnection) -> None:
    """The trainer's fingerprint of each adapter (log-probs of fixed probe tokens), and what each attach
    measured against it: the sampler served the weights the trainer wrote to within its noise. The
    sampling attach's figures join `round_summary`, which also counts ilf's refine seconds (m006) out
    of the round's overhead."""
    db.execute("""
        ALTER TABLE adapters ADD COLUMN fingerprint JSON;  -- cut.fingerprint: probe token ids and float32 log-probs
        CREATE TABLE adapter_checks (
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            step VARCHAR NOT NULL,            -- the round's step that attached it, e.g. 'sample'
            adapter_id VARCHAR NOT NULL,
            backend VARCHAR NOT NULL,         -- vllm-merged, vllm-lora, vllm-server, transformers
            precision VARCHAR NOT NULL,       -- whose noise the tolerance allows: float32 or half
            differing_outputs INTEGER,        -- greedy probe outputs unlike the base model's
            max_logprob_diff DOUBLE,          -- from the base model's probe
            fingerprint_max_abs DOUBLE,       -- max |Δ log p| from the trainer's fingerprint
            fingerprint_mean_abs DOUBLE,      -- mean |Δ log p| from the trainer's fingerprint
            fingerprint_tokens INTEGER,
            tolerance_max_abs DOUBLE,
            tolerance_mean_abs DOUBLE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (run, round, step, adapter_id)
        );

        CREATE OR REPLACE VIEW round_summary AS
        WITH keys AS (SELECT run, round FROM rounds UNION SELECT run, round FROM responses),
        sampled AS (SELECT run, round, count(*) AS responses FROM responses GROUP BY ALL),
        judged AS (
            SELECT r.run, r.round,
                   count(*) FILTER (WHERE j.verdict = 'positive') AS positive,
                   count(*) FILTER (WHERE j.verdict = 'negative') AS negative,
                   count(*) FILTER (WHERE j.verdict = 'failed') AS failed,
                   sum(j.cost_usd) AS judge_cost_usd
            FROM judgments j JOIN responses r USING (response_id)
            GROUP BY ALL
        ),
        trained AS (
            SELECT run, round, count(*) AS train_steps, arg_max(loss, step) AS last_loss, avg(loss) AS mean_loss
            FROM training_steps GROUP BY ALL
        ),
        checked AS (
            SELECT run, round, backend AS check_backend, fingerprint_max_abs, fingerprint_mean_abs
            FROM adapter_checks WHERE step = 'sample'
        ),
        evaluated AS (
            SELECT run, round,
                   avg(score) FILTER (WHERE role = 'candidate') AS eval_candidate,
                   avg(score) FILTER (WHERE role = 'incumbent') AS eval_incumbent
            FROM evaluations GROUP BY ALL
        )
        SELECT k.run, k.round, rd.status, rd.adapter_in, rd.adapter_out, rd.gate_decision,
               coalesce(s.responses, 0) AS responses,
               coalesce(j.positive, 0) AS positive,
               coalesce(j.negative, 0) AS negative,
               coalesce(j.failed, 0) AS failed,
               j.positive / nullif(j.positive + j.negative, 0) AS positive_share,
               j.judge_cost_usd,
               t.train_steps, t.last_loss, t.mean_loss,
               e.eval_candidate, e.eval_incumbent,
               rd.sample_s, rd.judge_s, rd.refine_s, rd.train_s, rd.eval_s, rd.wall_s,
               rd.wall_s - coalesce(rd.sample_s, 0) - coalesce(rd.judge_s, 0) - coalesce(rd.refine_s, 0)
                   - coalesce(rd.train_s, 0) - coalesce(rd.eval_s, 0) AS overhead_s,
               overhead_s / nullif(rd.wall_s, 0) AS overhead_share,
               c.check_backend, c.fingerprint_max_abs, c.fingerprint_mean_abs
        FROM keys k
        LEFT JOIN rounds rd USING (run, round)
        LEFT JOIN sampled s USING (run, round)
        LEFT JOIN judged j USING (run, round)
        LEFT JOIN trained t USING (run, round)
        LEFT JOIN evaluated e USING (run, round)
        LEFT JOIN checked c USING (run, round)
        ORDER BY k.run, k.round;
    """)


def m008_step_seconds(db: duckdb.DuckDBPyConnection) -> None:
    """Each optimizer step's wall seconds, so a round's training time can be set against its steps' sum."""
    db.execute("ALTER TABLE training_steps ADD COLUMN seconds DOUBLE;")


def m009_adapter_check_verdicts(db: duckdb.DuckDBPyConnection) -> None:
    """The adapter check places the engine's scores on the line from the parent's log-probs to the
    adapter's, against the engine's own noise (cut/fingerprint.py `match`): what it found, beside the
    distances. The max |Δ log p| is kept for reading but no longer decides, so `tolerance_max_abs`
    stays empty."""
    db.execute("""
        ALTER TABLE adapter_checks ADD COLUMN verdict VARCHAR;          -- match | indistinguishable
        ALTER TABLE adapter_checks ADD COLUMN parent_mean_abs DOUBLE;   -- engine vs the parent's log-probs
        ALTER TABLE adapter_checks ADD COLUMN position DOUBLE;          -- 0: the parent's scores, 1: the adapter's
        ALTER TABLE adapter_checks ADD COLUMN parent_on_engine BOOLEAN; -- position from the engine's own parent scores
        ALTER TABLE adapter_checks ADD COLUMN separation DOUBLE;        -- adapter vs parent, in noise units
        ALTER TABLE adapter_checks ADD COLUMN noise_mean_abs DOUBLE;    -- the engine vs the float32 base model
        ALTER TABLE adapter_checks ADD COLUMN noise_rms DOUBLE;
        ALTER TABLE adapter_checks ADD COLUMN noise_measured BOOLEAN;   -- false: assumed for the precision
    """)


def m010_judgment_spans(db: duckdb.DuckDBPyConnection) -> None:
    """The parts of a response a judgment blames (formats/spans.py): the judge's quote, and where the
    project found it in the response (character offsets; NULL when it could not be located). The
    `triples` view carries them as a list, in the judge's order, and whether the sampler cut the
    response off at max_tokens (`truncated`: it is trained without an end-of-sequence token)."""
    db.execute("""
        CREATE TABLE judgment_spans (
            response_id VARCHAR NOT NULL,
            judge VARCHAR NOT NULL,
            span_index INTEGER NOT NULL,      -- the quote's place in the judgment, from 0
            quote VARCHAR NOT NULL,           -- what the judge wrote
            start INTEGER,                    -- response text[start:end] in characters; NULL: unlocated
            "end" INTEGER,
            text VARCHAR,                     -- the response's own characters there
            severity VARCHAR,                 -- minor | major | critical, where the judge says
            PRIMARY KEY (response_id, judge, span_index)
        );

        CREATE OR REPLACE VIEW triples AS
        SELECT r.run, r.round, r.adapter_id AS adapter, p.instruction, p.input, r.text AS response,
               j.judgment, j.verdict, j.judge, j.created_at, r.response_id, j.score,
               coalesce(r.finish_reason = 'length', false) AS truncated,
               (SELECT list({'quote': s.quote, 'start': s.start, 'end': s."end", 'text': s.text,
                             'severity': s.severity} ORDER BY s.span_index)
                FROM judgment_spans s WHERE s.response_id = j.response_id AND s.judge = j.judge) AS spans
        FROM responses r
        JOIN prompts p USING (prompt_id)
        JOIN judgments j USING (response_id)
        WHERE j.verdict IN ('positive', 'negative');
    """)


def m011_detections(db: duckdb.DuckDBPyConnection) -> None:
    """Per training round, how well the paper's contrast test found the tokens the judges' spans blame
    (cut/scoring.py `Detection`): can the policy read the judgments at all."""
    db.execute("""
        CREATE TABLE detections (
            run VARCHAR NOT NULL,
            round INTEGER NOT NULL,
            rows INTEGER NOT NULL,             -- negative rows whose judgment located a span
            span_tokens INTEGER NOT NULL,      -- their tokens a span covers
            contrast_flagged INTEGER NOT NULL, -- their tokens the contrast flagged
            flagged_in_spans INTEGER NOT NULL, -- span tokens the contrast flagged
            precision DOUBLE,                  -- flagged_in_spans / contrast_flagged
            recall DOUBLE,                     -- flagged_in_spans / span_tokens
            f1 DOUBLE,
            PRIMARY KEY (run, round)
        );
    """)


def m012_reviews(db: duckdb.DuckDBPyConnection) -> None:
    """A person's judgment made by reviewing an AI judge's draft (`judge.kind: review`): the draft's judge,
    and whether the person changed it (the draft stays stored under its own judge)."""
    db.execute("""
        ALTER TABLE judgments ADD COLUMN draft_judge VARCHAR;
        ALTER TABLE judgments ADD COLUMN changed BOOLEAN;
    """)


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [
    m001_initial, m002_views, m003_triples_score, m004_dpo_steps, m005_judge_batches, m006_refinements,
    m007_adapter_checks, m008_step_seconds, m009_adapter_check_verdicts, m010_judgment_spans, m011_detections,
    m012_reviews,
]


def apply_migrations(db: duckdb.DuckDBPyConnection) -> list[str]:
    """Bring the schema forward; returns the names of the migrations applied now."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS schema_version (
            version INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL,
            applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
    """)
    applied = {name for (name,) in db.execute("SELECT name FROM schema_version").fetchall()}
    newly_applied = []
    for version, migration in enumerate(MIGRATIONS, start=1):
        if migration.__name__ in applied:
            continue
        db.begin()
        try:
            migration(db)
            db.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, migration.__name__])
            db.commit()
        except BaseException:
            db.rollback()
            raise
        newly_applied.append(migration.__name__)
    return newly_applied
