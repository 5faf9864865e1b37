"""Run fingerprints: everything that decides a run's counts, as canonical JSON.

Equal fingerprints, equal counts. Every run records one in ``runs.fingerprint``; a killed run
resumes only under the same one (:mod:`freqscan.tables.progress`), a recount reuses counts only
under the same one, and a count into an output whose current run has another is refused unless
``--force``. Runs derived from a parent (rethreshold, add-concepts) record the parent's with
their own change, as a count with their settings would.
"""

from __future__ import annotations

import json
from typing import Any

from freqscan.concepts import ConceptSet
from freqscan.config import CountConfig, absolute_location, path_or_name

# Settings that do not change counts: where and how wide a run runs, where it writes, when it
# counts as failed, which config file set the options, and --force. A killed run may be resumed,
# or a recount started, with other values for these.
NOT_COUNTED = ("runtime", "max_failed_shards", "on_duplicate_shards", "out", "config_file", "force")


def run_fingerprint(
    config: CountConfig,
    concept_set_hash: str,
    spacy_info: dict[str, str],
    checkpoint_sha256: str | None,
) -> str:
    """The fingerprint of a count: its counted settings, concept set, spaCy pipeline, weights."""
    counted = config.to_dict()
    for name in NOT_COUNTED:
        counted.pop(name)
    counted["concept_set_hash"] = concept_set_hash
    counted["spacy"] = spacy_info
    counted["tagger_checkpoint_sha256"] = checkpoint_sha256
    return json.dumps(counted, sort_keys=True)


def fingerprint_differences(before: str | None, now: str) -> list[str]:
    """``key: old -> new`` for every counted setting that differs between two fingerprints."""
    if before is None:
        return ["the current run recorded no fingerprint (written by an older freqscan)"]
    old, new = (_flatten(_with_absolute_paths(json.loads(f))) for f in (before, now))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def with_threshold(fingerprint: str | None, threshold: float) -> str | None:
    """A parent's fingerprint at a new image threshold: what a count at it would record."""
    if fingerprint is None:
        return None
    counted = json.loads(fingerprint)
    counted["image"]["threshold"] = threshold
    return json.dumps(counted, sort_keys=True)


def with_concepts(
    fingerprint: str | None, concepts: ConceptSet, tagged: bool, added: int
) -> str | None:
    """A parent's fingerprint with an enlarged concept set: what a count with it would record.

    In a tagged run concepts added without tagging have no image counts, which no count gives:
    the fingerprint says so, and a recount (which would take them as a tagged count's) must be
    ``--full``.
    """
    if fingerprint is None:
        return None
    counted = json.loads(fingerprint)
    counted["concepts"] = concepts.source
    counted["concept_set_hash"] = concepts.content_hash
    if tagged:
        counted["concepts_without_image_counts"] = (
            counted.get("concepts_without_image_counts", 0) + added
        )
    return json.dumps(counted, sort_keys=True)


def _with_absolute_paths(fingerprint: dict[str, Any]) -> dict[str, Any]:
    # Older runs recorded local paths as typed; that freqscan resolved them against the working
    # directory, as a run started there does with the config it reads back.
    fingerprint["source"]["input"] = [absolute_location(p) for p in fingerprint["source"]["input"]]
    fingerprint["concepts"] = path_or_name(fingerprint["concepts"])
    if image := fingerprint.get("image"):
        for name in ("text_encoder", "text_encoder_pretrained"):
            image[name] = path_or_name(image[name])
        image["checkpoint"] = image["checkpoint"] and absolute_location(image["checkpoint"])
    return fingerprint


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
