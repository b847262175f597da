"""The build's commit comes from the files (COMMIT, else the checkout's git directory),
never from running git: a process must not fork once gRPC runs in it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netweave import version

REPO = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(path: Path) -> str:
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    (path / "f").write_text("x")
    git("add", "f", cwd=path)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=path)
    return git("rev-parse", "--short=12", "HEAD", cwd=path)


def test_the_commit_of_this_checkout_is_gits_own() -> None:
    assert version._git_head(REPO / ".git") == git("rev-parse", "--short=12", "HEAD", cwd=REPO)


def test_loose_packed_detached_and_worktree_heads(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    head = make_repo(repo)
    assert version._git_head(repo / ".git") == head  # a loose ref
    git("pack-refs", "--all", cwd=repo)
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert version._git_head(repo / ".git") == head  # packed
    git("checkout", "-q", "--detach", cwd=repo)
    assert version._git_head(repo / ".git") == head  # detached
    git("checkout", "-q", "main", cwd=repo)
    git("worktree", "add", "-q", str(tmp_path / "tree"), cwd=repo)
    assert version._git_head(tmp_path / "tree" / ".git") == head  # a worktree's .git file


@pytest.mark.parametrize("text", ["ref: refs/heads/nowhere", "not-a-sha", ""])
def test_a_head_that_names_no_commit_is_none(tmp_path: Path, text: str) -> None:
    (tmp_path / "HEAD").write_text(text)
    assert version._git_head(tmp_path) is None


def test_commit_runs_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("commit() started a process")

    expected = git("rev-parse", "--short=12", "HEAD", cwd=REPO)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    version.commit.cache_clear()
    try:
        assert version.commit() == expected  # no COMMIT file in a checkout
    finally:
        version.commit.cache_clear()
