"""What every config section shares: unknown keys are errors, not silently ignored, and file
paths are checked when the config is read, not when a round needs them."""

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _not_a_url(value: Any) -> Any:
    # Checked on the text: Path("file:///x") would become the relative folder "file:/x".
    if isinstance(value, str) and _URL_SCHEME.match(value):
        raise ValueError(f"a local path, not a URL (got {value!r}); storage.mirror and placement.exchange take URLs")
    return value


LocalPath = Annotated[Path, BeforeValidator(_not_a_url)]


def _must_exist(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return path


ExistingFile = Annotated[LocalPath, AfterValidator(_must_exist)]
