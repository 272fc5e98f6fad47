"""Append-only answer cache, so an interrupted DPG run resumes where it stopped.

A JSON-lines file: a header line with the VQA backend's fingerprint, then one line per answer
keyed by (image sha256, tile index, question text). Answers of another backend are refused, not
mixed in. A killed run can leave a torn last line; only that line is dropped (and cut from the file).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from evaluators.dpg.vqa import VQAAnswers

CacheKey = tuple[str, int, str]   # (image sha256, tile, question)


class AnswerCache:
    def __init__(self, path: str | os.PathLike, fingerprint: str, backend_card: dict):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.answers: dict[CacheKey, tuple[bool, float | None, str]] = {}
        self.backend_card = backend_card
        if self.path.is_file():
            self._load()
        else:
            self._write_header()

    def _write_header(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as handle:
            handle.write(json.dumps({"fingerprint": self.fingerprint, "backend": self.backend_card}) + "\n")

    def _load(self) -> None:
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            # A killed run tore its last line: cut it off (that answer is asked again).
            data = data[:data.rfind(b"\n") + 1]
            with open(self.path, "r+b") as handle:
                handle.truncate(len(data))
        lines = data.decode("utf-8").splitlines()
        if not lines:
            self._write_header()
            return
        header = json.loads(lines[0])
        if header.get("fingerprint") != self.fingerprint:
            raise ValueError(f"answer cache {self.path} was made with another VQA backend "
                             f"({header.get('backend')}); pass another --cache path or delete it")
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"answer cache {self.path} line {number} is corrupt; delete the file") from None
            self.answers[(record["image"], record["tile"], record["question"])] = (
                record["yes"], record["p_yes"], record["text"])

    def get(self, key: CacheKey) -> tuple[bool, float | None, str] | None:
        return self.answers.get(key)

    def add(self, keys: list[CacheKey], answers: VQAAnswers) -> None:
        """Record a batch of answers (flushed, so a crash loses at most the batch being written)."""
        with open(self.path, "a") as handle:
            for key, yes, p_yes, text in zip(keys, answers.yes, answers.p_yes, answers.text):
                self.answers[key] = (yes, p_yes, text)
                handle.write(json.dumps({"image": key[0], "tile": key[1], "question": key[2],
                                         "yes": yes, "p_yes": p_yes, "text": text}) + "\n")
