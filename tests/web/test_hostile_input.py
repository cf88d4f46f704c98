"""No input produces a 500 or a traceback: every web route and CLI command driven with generated
hostile values (Hypothesis), on the real Elasticsearch and a storage folder.

A refusal is any 4xx naming the problem; a 503 is allowed only where Dagster, which these tests
do not start, is the backend asked (``Dagster does not answer``).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from em2q.cli import main
from tests.web.conftest import EXAMPLE_SETUP, setup_form_values
from tests.web.test_pages import _register

#: values that broke a page or the CLI before, and their relatives
KNOWN_BAD = [
    "", " ", "yesterday", "2020-13-45", "garbage", "now-7d/d", "0", "-5", "nan", "NaN", "inf",
    "-inf", "1e400", "1e-400", "9" * 400, "x" * 300, "a\r\nb", "a\x00b", "\x00", "../measurements",
    "/etc/passwd", "%2e%2e%2f", "..%c0%af", "\u2024\u2024/x", "{{7*7}}", "<script>x</script>",
    "' OR 1=1 --", "*", "?", "status=READY", "uploaded_at>=garbage", "=", ">=", "f=a=b",
    " ".join(["word"] * 10_000), ",".join(["760.5"] * 300), "760.5, nan", "😀", "\ufeff",
    "a" * 60_000, "WyJ4Il0=", "W3siYSI6MX1d", "bm90IGpzb24=", "eyJ0b2tlbiI6MX0=",
]  # fmt: skip
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
HOSTILE = st.one_of(st.sampled_from(KNOWN_BAD), TEXT)
#: a few dozen examples per route keep the whole file near a minute on the real backends
FEW = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _segment(value: str) -> str:
    """A generated value as one URL path segment (percent-encoded, as a browser sends it)."""
    return quote(value[:2000], safe="") or "x"


def _ok(answer) -> None:
    """The answer is not a server error: 4xx/2xx/3xx, or Dagster's documented 503."""
    body = answer.text
    assert "Traceback" not in body
    if answer.status_code == 503:
        assert "Dagster does not answer" in body or "Dagster" in body, body[:300]
        return
    assert answer.status_code < 500, (answer.status_code, body[:300])


@pytest.fixture
def hostile_client(client, metadata_store):
    _register(metadata_store, "kept")
    metadata_store.refresh()
    client.app.state.settings = client.app.state.settings  # same app: Dagster on a closed port
    return client


@FEW
@given(
    q=HOSTILE, sort=HOSTILE, token=HOSTILE, size=HOSTILE, since=HOSTILE, until=HOSTILE, f=HOSTILE
)
def test_the_catalog_page_never_fails(hostile_client, q, sort, token, size, since, until, f):
    params = {"q": q, "sort": sort, "page_token": token, "page_size": size,
              "uploaded_from": since, "uploaded_to": until, "f": f}  # fmt: skip
    _ok(hostile_client.get("/catalog", params=params))


@FEW
@given(measurement=HOSTILE, p=HOSTILE, mz=HOSTILE, ppm=HOSTILE, launched=HOSTILE)
def test_measurement_pages_never_fail(hostile_client, measurement, p, mz, ppm, launched):
    params = {"p": p, "mz": mz, "ppm": ppm, "launched": launched}
    for target in ("kept", _segment(measurement)):
        _ok(hostile_client.get(f"/measurements/{target}", params=params))
    quoted = _segment(measurement)
    for path in (f"/api/measurements/{quoted}/status", f"/measurements/{quoted}/tic.png",
                 f"/api/workflows/{quoted}"):  # fmt: skip
        _ok(hostile_client.get(path))


@FEW
@given(m=st.lists(HOSTILE, max_size=12), p=st.lists(HOSTILE, max_size=12), mz=HOSTILE, ppm=HOSTILE)
def test_the_compare_page_never_fails(hostile_client, m, p, mz, ppm):
    params = [("m", v) for v in m] + [("p", v) for v in p] + [("mz", mz), ("ppm", ppm)]
    _ok(hostile_client.get("/compare", params=params))


@FEW
@given(name=HOSTILE, comment=HOSTILE, value=HOSTILE, source=HOSTILE, measurement=HOSTILE)
def test_parameter_set_pages_never_fail(hostile_client, name, comment, value, source, measurement):
    form = {"name": name, "comment": comment, "source": source, "measurement": measurement,
            "value:qc.min_median_snr": value, "value:binning.min_frequency": value}  # fmt: skip
    _ok(hostile_client.post("/parameter-sets", data=form, follow_redirects=False))
    _ok(hostile_client.get("/parameter-sets/new", params={"from": source, "measurement": name}))
    _ok(hostile_client.get(f"/parameter-sets/{_segment(name)}"))


@FEW
@given(workflow=HOSTILE, parameter_set=HOSTILE, measurement=HOSTILE)
def test_starting_and_deleting_never_fail(hostile_client, workflow, parameter_set, measurement):
    target = _segment(measurement)
    form = {"workflow": workflow, "parameter_set": parameter_set}
    _ok(hostile_client.post(f"/measurements/{target}/runs", data=form, follow_redirects=False))
    if target != "kept":
        _ok(hostile_client.post(f"/measurements/{target}/delete", follow_redirects=False))


@FEW
@given(field=st.sampled_from(sorted(setup_form_values(EXAMPLE_SETUP))), value=HOSTILE,
       filename=HOSTILE)  # fmt: skip
def test_the_upload_form_never_fails(hostile_client, field, value, filename):
    values = {**setup_form_values(EXAMPLE_SETUP), field: value}
    files = {"imzml": (f"{filename}.imzML", b"<mzML/>"), "ibd": (f"{filename}.ibd", b"\0" * 16)}
    _ok(hostile_client.post("/upload", data=values, files=files, headers={"Accept": "application/json"}))  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [
        b'--B\r\nContent-Disposition: form-data; name="title"\r\n\r\nx\r\n--B--\r\n',
        b"--B\r\nContent-Disposition form-data name=title\r\n\r\nx\r\n--B--\r\n",
        b'--B\r\nContent-Disposition: form-data; name="imzml"; filename="a\x00\r.imzML"\r\n\r\nx\r\n--B--',
        b"--B\r\n\r\n\r\n--B--\r\n",
        b"--X\r\nnot a header\r\n\r\n",
        b"\xff\xfe" * 100,
    ],
)
def test_malformed_multipart_bodies_are_refused_with_400(hostile_client, body):
    answer = hostile_client.post(
        "/upload", content=body, headers={"Content-Type": "multipart/form-data; boundary=B"}
    )
    _ok(answer)
    assert 400 <= answer.status_code < 500


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def cli_env(web_settings, metadata_store):
    _register(metadata_store, "kept")
    metadata_store.refresh()
    return {
        "EM2Q_ELASTICSEARCH_URL": web_settings.elasticsearch_url,
        "EM2Q_INDEX_PREFIX": web_settings.index_prefix,
        "EM2Q_STORAGE": web_settings.storage,
        "EM2Q_DAGSTER_URL": "http://127.0.0.1:9",
    }


def _cli_ok(env, *args: str) -> None:
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"em2q {' '.join(args)[:200]} raised {result.exception!r}")
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1, 2, 3, 4), result.exit_code


@FEW
@given(text=HOSTILE, f=HOSTILE, sort=HOSTILE, facet=HOSTILE, limit=HOSTILE)
def test_cli_search_never_fails(cli_env, text, f, sort, facet, limit):
    _cli_ok(cli_env, "search", "--", text)
    _cli_ok(cli_env, "search", "-f", f, "--sort", sort, "--facet", facet, "--limit", limit)


@FEW
@given(value=HOSTILE)
def test_cli_commands_taking_an_id_or_name_never_fail(cli_env, value):
    for command in (["show"], ["status"], ["params", "show"], ["delete", "--yes"], ["run"],
                    ["wait"], ["workflows", "publish"], ["workflows", "unpublish"]):  # fmt: skip
        if command[0] == "delete" and value == "kept":
            continue
        _cli_ok(cli_env, *command, "--", value)
    _cli_ok(cli_env, "params", "diff", "--", value, "default")


@FEW
@given(setup=st.one_of(st.sampled_from(KNOWN_BAD), TEXT), values=HOSTILE)
def test_cli_files_never_fail(cli_env, tmp_path_factory, setup, values):
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "setup.yaml").write_text(setup, encoding="utf-8")
    (folder / "values.yaml").write_text(values, encoding="utf-8")
    (folder / "a.imzML").write_bytes(b"<mzML/>")
    (folder / "a.ibd").write_bytes(b"\0" * 16)
    _cli_ok(cli_env, "upload", str(folder / "a.imzML"), "--setup", str(folder / "setup.yaml"))
    _cli_ok(cli_env, "params", "save", "hostile", str(folder / "values.yaml"))
    json.dumps(setup)  # the generated text itself is plain data
