import pytest

from jobs import analyze, bench_data, precompute, synth


@pytest.mark.parametrize("job", [synth, precompute, analyze, bench_data])
def test_help_explains_every_option(job, capsys):
    with pytest.raises(SystemExit) as done:
        job.parse_args(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "python -m jobs." in text and "default" in text
