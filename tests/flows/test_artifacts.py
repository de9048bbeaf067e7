"""The flagged-tokens artifact renders in CommonMark as the response, the flagged runs in bold."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from markdown_it import MarkdownIt

from flows.artifacts import bold_markdown, plain_markdown

WORD_JOINER = "\u2060"


class _Rendered(HTMLParser):
    """The visible text of rendered HTML (a <br> as a newline), the text of each <strong>, the tags used."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.text, self.strong, self.tags, self._in_strong = "", [], set(), False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.add(tag)
        if tag == "br":
            self.text += "\n"
        elif tag == "strong":
            self._in_strong = True
            self.strong.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "strong":
            self._in_strong = False

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._in_strong:
            self.strong[-1] += data


def rendered(markdown: str) -> _Rendered:
    html = MarkdownIt("commonmark").render(markdown)
    return _Rendered(html.replace("<br />\n", "<br />").replace(WORD_JOINER, ""))


def visible_lines(text: str) -> list[str]:
    """Lines as a browser shows them: markdown drops a line's leading and trailing spaces."""
    return [line.strip() for line in text.strip("\n").split("\n")]


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([("Let's think it through", False), (". Combine the numbers in both parentheses", True),
                      (". Then add.", False)], id="punctuation-after-a-word"),
        pytest.param([("So 47 + 38 = ", False), ("84.", True), ("Done", False)], id="punctuation-before-a-word"),
        pytest.param([("x", False), ("(", True), ("y", False), (")", True), ("z", False)], id="punctuation-only"),
        pytest.param([("The answer", False), (" is 84 ", True), ("today.", False)], id="leading-and-trailing-spaces"),
        pytest.param([("First line", False), (" then\nsecond", True), ("\n\nthird\n\n", False)], id="newlines"),
        pytest.param([("Try ", False), ("*not* _em_ `code` [a](b) <i> # h &amp; \\", True), (" after", False)],
                     id="markdown-inside-flagged"),
        pytest.param([("# Title\n1. item\n- dash\n> quote\n***\n", False), ("85", True)], id="markdown-around-flagged"),
        pytest.param([("The whole response, flagged!", True)], id="whole-response"),
        pytest.param([("The whole response\nover two lines.\n", True)], id="whole-response-two-lines"),
    ],
)
def test_flagged_runs_render_bold_and_the_text_unchanged(pieces: list[tuple[str, bool]]) -> None:
    response = "".join(text for text, _ in pieces)
    html = rendered(bold_markdown(pieces))
    assert visible_lines(html.text) == visible_lines(response)
    flagged_lines = [line.strip() for text, flagged in pieces if flagged for line in text.split("\n")]
    assert html.strong == [line for line in flagged_lines if line]
    assert html.text.count("*") == response.count("*")
    assert html.tags <= {"p", "strong", "br"}


def test_the_marker_that_printed_in_the_ui_is_gone() -> None:
    """Issue 23: `through**. Combine**` showed its markers."""
    html = rendered(bold_markdown([("it through", False), (". Combine", True), (" the numbers", False)]))
    assert html.strong == [". Combine"] and "*" not in html.text


def test_plain_text_renders_as_itself() -> None:
    judgment = 'The response "**85** <b>" is incorrect: 47 + 38 = 85, not 84_1.'
    html = rendered(plain_markdown(judgment))
    assert html.text.strip() == judgment and html.tags == {"p"}
