import pytest

from sknet import progress as progress_module
from sknet.errors import ConfigError
from sknet.progress import Progress


@pytest.fixture
def no_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)


def test_plain_lines_without_a_terminal(no_terminal, capsys):
    with Progress(4, "evaluating", "auto") as bar:
        for i in range(4):
            bar.update(postfix=lambda i=i: {"top-1": f"{10 * i}%"})
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    # every step but the last (the caller reports the end), with the statistics and a time left
    assert [line.split(",")[0] for line in lines] == [f"evaluating: batch {n}/4 (" + f"{25 * n}%)" for n in (1, 2, 3)]
    assert ", top-1 20%, ends in " in lines[2]
    assert captured.err == ""  # no bar


def test_never_shows_nothing_and_unknown_totals_count(no_terminal, capsys):
    with Progress(4, "x", "never") as bar:
        bar.update()
    assert capsys.readouterr().out == ""
    with Progress(None, "attention", "auto", unit="image") as bar:
        bar.update(3)
    assert capsys.readouterr().out.strip() == "attention: image 3"


def test_bar_when_forced_and_postfix_called_only_when_shown(no_terminal, capsys):
    calls = []

    def postfix():
        calls.append(1)
        return {"loss": "1.0"}

    with Progress(20, "epoch 1/1", "always", initial=5) as bar:
        for _ in range(15):
            bar.update(postfix=postfix)
    captured = capsys.readouterr()
    assert captured.out == "" and "epoch 1/1" in captured.err and "loss=1.0" in captured.err
    assert len(calls) == 2  # at steps 10 and 20


def test_silent_rank_and_bad_mode(no_terminal, capsys):
    with Progress(3, "x", "auto", enabled=False) as bar:
        bar.update()
    assert capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match="progress must be"):
        Progress(3, "x", "sometimes")


def test_the_first_plain_line_comes_early_then_one_a_minute(monkeypatch, capsys):
    """A redirected log says what runs and when it ends after FIRST_PLAIN_S, not after a minute."""
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    clock = iter([0.0, 1.0, 6.0, 30.0, 65.0, 70.0])  # construction, then one reading per update
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    with Progress(10, "epoch 1/1", "auto") as bar:
        for _ in range(5):
            bar.update()
    # 1 s: too early; 6 s: the first line; 30 and 65 s: within a minute of it; 70 s: the next
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/1: batch 2/10", "epoch 1/1: batch 5/10"], lines
