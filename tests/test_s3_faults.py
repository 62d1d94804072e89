"""The S3 store under network faults (issue 14, items 3 and 4): a real fault-injecting TCP proxy
(tests/faultproxy.py) between artfs and the moto S3 server on 127.0.0.1.

* Transient failures (503s, connections reset mid-answer) are retried until the time budget
  (``ARTFS_S3_TIMEOUT``) is spent, not a fixed three times; ``AWS_MAX_ATTEMPTS`` still caps them.
* A retried exclusive create whose first attempt did succeed is reported as a success, and one
  whose outcome cannot be checked is never reported as AlreadyExists.
* A stalled multipart upload gives up within the budget (no 5-minute read timeout), exits with
  the "store unavailable" code, and leaves no unfinished upload or commit intent behind; ``artfs
  gc`` aborts unfinished uploads left by crashed writers.
"""

from __future__ import annotations

import os
import time
import subprocess
import sys
import uuid

import pytest

import artfs
from artfs import AlreadyExists, StoreUnavailable
from artfs.backends.s3 import S3Backend

from faultproxy import FaultProxy

MiB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def proxy(s3_server):
    with FaultProxy(s3_server, seed=14) as p:
        yield p


@pytest.fixture
def bucket(s3_server):
    """A fresh bucket, made directly (not through the proxy)."""
    name = f"artfs-faults-{uuid.uuid4().hex[:12]}"
    direct = S3Backend(f"s3://{name}")
    direct.ensure_bucket()
    yield name
    direct.close()


def through(proxy: FaultProxy, bucket: str, *, timeout: float, **kw) -> S3Backend:
    return S3Backend(f"s3://{bucket}/store", endpoint_url=proxy.url, timeout=timeout, **kw)


def direct_client(bucket: str):
    return S3Backend(f"s3://{bucket}").client


def unfinished_uploads(bucket: str) -> list[str]:
    r = direct_client(bucket).list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in r.get("Uploads", ())]


def actions(proxy: FaultProxy) -> list[str]:
    """What the proxy did to each request that counts (those matching its ``only``)."""
    return [s.action for s in proxy.log if s.n]


# --------------------------------------------------------------------------------------------
# item 4: retries until the budget is spent
# --------------------------------------------------------------------------------------------

def test_transient_errors_are_retried_until_the_budget(proxy, bucket, tmp_path):
    """At 20% 503s and 10% resets every put and get succeeds within a 30 s budget (the issue's
    case; with three attempts and no retry of a broken body, as before, several of them failed).
    The proxy's faults are seeded, so the run is the same each time but for the order in which
    the parallel parts of the multipart transfers arrive."""
    b = through(proxy, bucket, timeout=30, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    proxy.configure(error_rate=0.2, reset_rate=0.1)
    blobs = {f"k{i}": os.urandom(200_000 + i) for i in range(12)}
    for k, data in blobs.items():
        b.put(k, data)
    for k, data in blobs.items():
        assert b.get(k) == data
        assert b.get_blob(k) == data  # the mount's small-blob GET: direct, botocore's retries behind it
        assert b.get_range(k, 1000, 5000) == data[1000:6000]
    big = tmp_path / "big"
    big.write_bytes(os.urandom(11 * MiB))  # three parts
    b.put_file("big", str(big))
    out = tmp_path / "out"
    assert b.download_file("big", str(out)) == 11 * MiB
    assert out.read_bytes() == big.read_bytes()
    with open(tmp_path / "range", "wb+") as f:
        assert b.fetch_range_into("big", 3 * MiB, 4 * MiB, f.fileno(), 0) == 4 * MiB
        f.seek(0)
        assert f.read() == big.read_bytes()[3 * MiB: 7 * MiB]
    seen = actions(proxy)
    assert seen.count("error") >= 3 and seen.count("reset") >= 3, seen  # the faults did happen


def test_budget_spent_gives_store_unavailable(proxy, bucket):
    """A store that answers 503 forever, resets, stalls or refuses: StoreUnavailable, no hang."""
    b = through(proxy, bucket, timeout=3)
    b.put("k", b"data")
    for mode in ("error_from", "reset_from", "stall_from"):
        proxy.clear()
        proxy.configure(**{mode: proxy.requests + 1})
        with pytest.raises(StoreUnavailable):
            b.put("k", b"other")
        with pytest.raises(StoreUnavailable):
            b.get("k")
        with pytest.raises(StoreUnavailable):
            b.get_blob("k")
        with pytest.raises(StoreUnavailable), open(os.devnull, "wb") as out:
            b.fetch_range_into("k", 0, 4, out.fileno(), 0)  # the lazy reader's: direct, then botocore
    proxy.clear()
    proxy.release()
    proxy.refuse()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        b.get("k")
    with pytest.raises(StoreUnavailable, match="unreachable"):
        b.get_blob("k")
    proxy.accept()
    # the put whose answer was reset did reach the server; the 503'd and stalled ones did not
    assert b.get("k") == b"other"


def test_retries_spread_over_the_budget(proxy, bucket):
    """503s forever: botocore's retries go on until one more attempt would not fit (its backoff
    capped at a tenth of the budget, not botocore's 20 s, which gave up after four or five tries
    with half the budget left), and the request ends within the budget."""
    budget = 6.0
    b = through(proxy, bucket, timeout=budget)
    b.put("k", b"data")
    proxy.clear()
    proxy.configure(error_from=proxy.requests + 1)
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        b.get("k")
    took = time.monotonic() - start
    tries = [s.at for s in proxy.log if s.action == "error"]
    attempt = budget / 3  # botocore cannot cut an attempt short: the last starts one attempt early
    assert tries[-1] - start >= budget - attempt - budget / 10 - 0.2, (len(tries), tries[-1] - start)
    assert len(tries) >= 6, len(tries)
    assert took <= budget + 2.0, took


def test_ranged_fetch_broken_off_is_finished_by_botocore(proxy, bucket, tmp_path):
    """A ranged GET of the lazy reader (``fetch_range_into``: a direct request first) whose answer
    is a 503, is reset half-way through its body or stalls still puts exactly the asked bytes in
    place: botocore's path asks for what the direct request did not deliver, within the budget.
    The direct path stays on for the next request (a fault says nothing about its shape)."""
    b = through(proxy, bucket, timeout=6)
    data = os.urandom(6 * MiB)
    b.put("big", data)
    for action in ("error", "reset", "stall"):
        proxy.clear()
        proxy.configure(script={proxy.requests + 1: action})
        path = tmp_path / action
        path.write_bytes(b"\xee" * (5 * MiB))
        with open(path, "r+b") as f:
            assert b.fetch_range_into("big", MiB - 1, 4 * MiB + 3, f.fileno(), 1) == 4 * MiB + 3
        assert path.read_bytes() == b"\xee" + data[MiB - 1: 5 * MiB + 2] + b"\xee" * (MiB - 4)
        assert actions(proxy)[-2:] == [action, "pass"], actions(proxy)
        assert b._direct_obj is not None and b._direct_obj.on and b._direct_obj.ranges
    proxy.release()


def test_aws_max_attempts_is_honoured(proxy, bucket, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    b = through(proxy, bucket, timeout=30)
    proxy.configure(error_from=1)
    with pytest.raises(StoreUnavailable, match="SlowDown"):
        b.put("k", b"data")
    assert actions(proxy) == ["error", "error"]


def test_aws_retry_mode_is_honoured(proxy, bucket, monkeypatch):
    """``retry_mode = legacy`` (the user's choice) keeps botocore's count-bounded retries: with a
    1 s budget the standard mode stops after one attempt, legacy makes all AWS_MAX_ATTEMPTS."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "4")
    proxy.configure(error_from=1)
    with pytest.raises(StoreUnavailable, match="503"):
        through(proxy, bucket, timeout=1).head("k")  # a HEAD's 503 has no body: named by status
    assert actions(proxy) == ["error"]
    monkeypatch.setenv("AWS_RETRY_MODE", "legacy")
    with pytest.raises(StoreUnavailable, match="503"):
        through(proxy, bucket, timeout=1).head("k")
    assert actions(proxy) == ["error"] * 5


# --------------------------------------------------------------------------------------------
# integrity of retried exclusive creates
# --------------------------------------------------------------------------------------------

def test_retried_exclusive_create_that_succeeded_is_a_success(proxy, bucket):
    b = through(proxy, bucket, timeout=10)
    proxy.configure(script={1: "reset"})  # the PUT is done, its answer lost; the retry sees 412
    b.put("once", b"mine", exclusive=True)
    # the retry found the key taken (412) and read it back to see whether it was ours
    assert [(s.method, s.action) for s in proxy.log] == [("PUT", "reset"), ("PUT", "pass"), ("GET", "pass")]
    assert b.get("once") == b"mine"
    with pytest.raises(AlreadyExists):  # a real conflict is still one
        b.put("once", b"someone else's", exclusive=True)
    assert b.get("once") == b"mine"


def test_retried_exclusive_create_of_unknown_outcome_is_not_already_exists(proxy, bucket):
    """The answer is lost, the retry finds the key taken, and the read-back fails: whether the
    create was ours is unknown, so it must not be reported as someone else's (a commit would take
    the next number and leave a second version of the same content)."""
    b = through(proxy, bucket, timeout=3)
    proxy.configure(script={1: "reset"}, error_from=3)
    with pytest.raises(StoreUnavailable, match="cannot tell whether"):
        b.put("once", b"mine", exclusive=True)
    assert [(s.method, s.action) for s in proxy.log][:3] == [("PUT", "reset"), ("PUT", "pass"), ("GET", "error")]
    proxy.clear()
    assert b.get("once") == b"mine"


def test_commit_whose_manifest_answer_is_lost_makes_one_version(proxy, bucket, tmp_path):
    b = through(proxy, bucket, timeout=10)
    store = artfs.Store(backend=b, cache=artfs.Cache(str(tmp_path / "cache")))
    proxy.configure(only=lambda m, t: m == "PUT" and "/versions/" in t, script={1: "reset"})
    art = artfs.Artifact("model", type="model")
    with art.new_file("w.bin", mode="wb") as f:
        f.write(b"weights")
    v = store.log_artifact(art, project="proj")
    assert actions(proxy)[0] == "reset", proxy.log
    assert v.version == "v0" and v.commit_result.created
    assert store.versions("proj", "model") == [0]
    assert [o.key for o in b.list("proj/intents/")] == []


# --------------------------------------------------------------------------------------------
# lineage's small PUTs: one plain signed PUT, botocore's path for anything else (same budget)
# --------------------------------------------------------------------------------------------

def test_a_small_put_needs_no_boto3_and_is_what_botocore_reads(proxy, bucket):
    """``put_small`` (lineage's edges and run records) in a fresh process: the object is stored
    with its bytes (a key that needs quoting too), a taken key is AlreadyExists for an exclusive
    create, and neither boto3 nor botocore is imported for a successful one."""
    code = ("import sys; from artfs.backends.s3 import S3Backend\n"
            f"b = S3Backend('s3://{bucket}/store', endpoint_url={proxy.url!r}, timeout=10)\n"
            "b.put_small('p/runs/r 1+x~/used/p/a/0', b'{}')\n"
            "b.put_small('p/runs/r1/run.json', b'{\"id\": 1}', exclusive=True)\n"
            "print(sorted(m for m in ('boto3', 'botocore') if m in sys.modules), b.counter['put'])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[]", "2"]
    assert [(s.method, s.action) for s in proxy.log] == [("PUT", "pass"), ("PUT", "pass")]
    b = through(proxy, bucket, timeout=10)
    assert b.get("p/runs/r 1+x~/used/p/a/0") == b"{}" and b.get("p/runs/r1/run.json") == b'{"id": 1}'
    with pytest.raises(AlreadyExists):  # moto answers 412; botocore's path says so in artfs's terms
        b.put_small("p/runs/r1/run.json", b"another", exclusive=True)
    assert b.get("p/runs/r1/run.json") == b'{"id": 1}'


def test_a_small_put_that_fails_is_finished_by_botocore_within_the_budget(proxy, bucket):
    """A 503, a reset or a stall of the plain PUT: botocore's path stores the object within the
    same budget (a stall waits one attempt's timeout, a third of the budget, as botocore's would)."""
    b = through(proxy, bucket, timeout=6)
    for action in ("error", "reset", "stall"):
        proxy.clear()
        proxy.configure(script={proxy.requests + 1: action})
        b.put_small(f"edge-{action}", action.encode())
        assert actions(proxy)[-2:] == [action, "pass"], actions(proxy)
        assert b.get(f"edge-{action}") == action.encode()
    proxy.release()


def test_a_small_put_refused_for_its_shape_leaves_it_to_botocore(proxy, bucket):
    """A 403 (a signature the server does not take, say) of the plain PUT: botocore's path writes
    (its own answer decides: here the proxy let it through), and the plain path is off for the store."""
    b = through(proxy, bucket, timeout=6)
    proxy.configure(script={1: "error"}, status=403)
    b.put_small("edge", b"{}")
    assert actions(proxy) == ["error", "pass"] and b.get("edge") == b"{}"
    assert b._writer is False  # botocore's path alone from now on


def test_a_small_put_gives_up_within_the_budget(proxy, bucket):
    """503s, resets or stalls forever, or a refused connection: StoreUnavailable within the
    budget (the plain attempt's time counts against it), never a hang."""
    budget = 4.0
    b = through(proxy, bucket, timeout=budget)
    for mode in ("error_from", "reset_from", "stall_from"):
        proxy.clear()
        proxy.configure(**{mode: proxy.requests + 1})
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            b.put_small("k", b"data")
        assert time.monotonic() - start <= budget + 2.0, mode
        assert len(actions(proxy)) >= 2, (mode, actions(proxy))  # the plain PUT and botocore's retries
    proxy.clear()
    proxy.release()
    proxy.refuse()
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        b.put_small("k", b"data")
    assert time.monotonic() - start <= budget + 2.0
    proxy.accept()


def test_a_small_exclusive_create_whose_answer_is_lost_is_a_success(proxy, bucket):
    """The plain PUT reached the server and its answer was reset: botocore's create then finds the
    key taken and reads it back: ours, so a success (a run record is never taken for another's)."""
    b = through(proxy, bucket, timeout=10)
    proxy.configure(script={1: "reset"})
    b.put_small("run.json", b"mine", exclusive=True)
    assert [(s.method, s.action) for s in proxy.log] == [("PUT", "reset"), ("PUT", "pass"), ("GET", "pass")]
    assert b.get("run.json") == b"mine"


def test_the_small_put_stands_aside_where_only_botocore_can_tell(tmp_path, monkeypatch):
    """Set up from the environment alone where that says what botocore would do (the endpoint and
    its addressing, AWS S3 in the environment's region, the environment's credentials); else
    None, and botocore writes: no credentials there, a proxy, a configuration file naming an
    endpoint or a region botocore would read."""
    from artfs.backends._s3direct import direct_put_for

    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "ARTFS_S3_ADDRESSING_STYLE",
              "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")

    def where(bucket="bkt", endpoint=None, unsigned=False):
        d = direct_put_for(bucket=bucket, endpoint_url=endpoint, unsigned=unsigned, attempt_timeout=5.0)
        return None if d is None else (d.scheme, d.host, d.path, d.region, d.creds)

    assert where() == ("https", "bkt.s3.eu-west-3.amazonaws.com", "/", "eu-west-3", ("AKID", "secret", None))
    assert where("my.dotted.bucket")[1:3] == ("s3.eu-west-3.amazonaws.com", "/my.dotted.bucket/")
    assert where(endpoint="http://127.0.0.1:9000")[:3] == ("http", "127.0.0.1:9000", "/bkt/")
    monkeypatch.setenv("ARTFS_S3_ADDRESSING_STYLE", "virtual")
    assert where(endpoint="https://minio.lan")[1:3] == ("bkt.minio.lan", "/")
    monkeypatch.delenv("ARTFS_S3_ADDRESSING_STYLE")
    assert where(unsigned=True)[4] is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert where() is None
    monkeypatch.delenv("HTTPS_PROXY")
    (tmp_path / "config").write_text("[default]\nendpoint_url = http://elsewhere:9000\n")
    assert where() is None
    (tmp_path / "config").write_text("[default]\nregion = eu-west-1\n")
    assert where() is not None  # the environment's region is botocore's too
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert where() is None  # the profile's region: botocore reads it
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "config").unlink()
    assert where(endpoint="http://127.0.0.1:9000") is None  # credentials from files or roles: botocore's chain


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEB0aDAbc/def+ghi="])
def test_the_small_puts_signature_is_botocores(token):
    """The plain PUT's SigV4 headers are exactly those botocore's S3 signer computes for the same
    request (the body's SHA-256 signed), path-style and virtual-hosted."""
    import datetime

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.utils import percent_encode

    from artfs.backends._s3direct import _DirectPut

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    for scheme, host, path, region in [("http", "127.0.0.1:9000", "/bkt/", "us-east-1"),
                                       ("https", "bkt.s3.eu-west-3.amazonaws.com", "/", "eu-west-3")]:
        d = _DirectPut(scheme, host, path, (creds.access_key, creds.secret_key, token), region, 5.0)
        for key, body in [("pre/runs/r1/used/p/a/3", b"{}"), ("pre/a b/+c~%", b'{"role": "logger"}')]:
            quoted = path + percent_encode(key, safe="/~")
            req = AWSRequest(method="PUT", url=f"{scheme}://{host}{quoted}", data=body)
            req.context["payload_signing_enabled"] = True
            S3SigV4Auth(creds, "s3", region).add_auth(req)
            theirs = {k.lower(): req.headers[k] for k in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256")}
            if token:
                theirs["x-amz-security-token"] = req.headers["X-Amz-Security-Token"]
            when = datetime.datetime.strptime(theirs["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()  # the same second as botocore's signature
            mine = {k.lower(): v for k, v in d.headers("PUT", quoted, body, when).items()}
            assert mine == theirs


# --------------------------------------------------------------------------------------------
# item 3: a stalled multipart upload
# --------------------------------------------------------------------------------------------

def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "artfs.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def cli_env(proxy_url: str, tmp_path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AWS_ENDPOINT_URL=proxy_url, ARTFS_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


@pytest.mark.timeout(180)  # the command's own limit (120 s) fails it first, with its output
def test_stalled_multipart_upload_gives_up_and_cleans_up(proxy, bucket, tmp_path):
    """A 20 MiB put (three 8 MiB parts) whose second part stalls: the command fails with exit code
    6 instead of waiting 5 minutes per attempt, and the store keeps neither the unfinished upload
    nor the commit's intent."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(20 * MiB))
    proxy.configure(only=lambda m, t: "partNumber=" in t, stall_from=2)
    r = cli("--store", f"s3://{bucket}/store", "put", "-n", "proj/big", "-t", "dataset", str(src),
            env=cli_env(proxy.url, tmp_path, ARTFS_S3_TIMEOUT="3"))
    assert r.returncode == 6, r.stderr
    assert "proj/blobs/" in r.stderr and "\n" not in r.stderr.strip(), r.stderr
    assert "stall" in actions(proxy)
    proxy.release()
    assert unfinished_uploads(bucket) == []  # aborted at once by the transfer manager
    direct = S3Backend(f"s3://{bucket}/store")
    assert [o.key for o in direct.list("proj/")] == []  # no intent, no blob, no version


def test_gc_aborts_unfinished_multipart_uploads(s3_server, bucket, tmp_path):
    """Uploads left by a writer that died (or could not abort) are aborted by ``artfs gc``; an
    upload outside the store's prefix is not the store's and is kept. (moto reports every upload
    as started in 2010, so the 24 h grace that protects running commits cannot be shown here.)"""
    c = direct_client(bucket)
    mine = c.create_multipart_upload(Bucket=bucket, Key="store/proj/blobs/xxh128/ab/left")
    c.upload_part(Bucket=bucket, Key="store/proj/blobs/xxh128/ab/left", UploadId=mine["UploadId"],
                  PartNumber=1, Body=b"x" * 1000)
    c.create_multipart_upload(Bucket=bucket, Key="elsewhere/file")
    store = artfs.Store(f"s3://{bucket}/store", cache=artfs.Cache(str(tmp_path / "cache")))
    art = artfs.Artifact("a", type="dataset")
    with art.new_file("f", mode="wb") as f:
        f.write(b"kept")
    store.log_artifact(art, project="proj")
    env = cli_env(s3_server, tmp_path)
    r = cli("--store", f"s3://{bucket}/store", "gc", "proj", env=env)
    assert r.returncode == 0, r.stderr
    assert unfinished_uploads(bucket) == ["elsewhere/file"]
    out = tmp_path / "out"
    store.artifact("proj/a:v0").download(str(out))
    assert (out / "f").read_bytes() == b"kept"


@pytest.mark.timeout(300)
def test_umount_with_a_stalled_store_ends_and_keeps_the_draft(proxy, bucket, tmp_path):
    """``artfs umount`` of a mount whose store stalls mid-upload returns (it waited 5 minutes per
    attempt of the stalled part before), says the commit failed, and keeps the draft, which
    ``artfs commit`` turns into the version once the store answers again."""
    from artfsd.testing import MountProcess

    url = f"s3://{bucket}/store"
    store = artfs.Store(url, cache=artfs.Cache(str(tmp_path / "cache-w")))
    art = artfs.Artifact("data", type="dataset")
    with art.new_file("small.txt", mode="wb") as f:
        f.write(b"v0\n")
    store.log_artifact(art, project="proj")
    env = cli_env(proxy.url, tmp_path, ARTFS_S3_TIMEOUT="3", ARTFS_STORE=url,
                  ARTFS_STAGING_DIR=str(tmp_path / "staging"), XDG_STATE_HOME=str(tmp_path / "state"))
    big = os.urandom(20 * MiB)
    with MountProcess(url, tmp_path / "mnt", cache_dir=tmp_path / "cache", env=env,
                      args=["--refresh", "1"]) as m:
        with open(m.path("proj", "data", "draft", "big.bin"), "wb") as f:
            f.write(big)
        proxy.configure(only=lambda m_, t: "partNumber=" in t, stall_from=2)
        r = cli("umount", m.mountpoint, env=env, timeout=150)
        assert r.returncode != 0, (r.stdout, r.stderr)
        assert "draft" in r.stderr and "commit" in r.stderr, r.stderr
    assert "stall" in actions(proxy)
    proxy.clear()
    proxy.release()
    assert store.versions("proj", "data") == [0]
    assert unfinished_uploads(bucket) == []
    r = cli("commit", "proj/data", env=env)
    assert r.returncode == 0, r.stderr
    assert store.versions("proj", "data") == [0, 1]
    out = tmp_path / "out"
    store.artifact("proj/data:v1").download(str(out))
    assert (out / "big.bin").read_bytes() == big and (out / "small.txt").read_bytes() == b"v0\n"


@pytest.mark.timeout(180)
def test_mount_small_files_through_resets_and_errors(proxy, bucket, tmp_path):
    """A mount reading a directory of small files cold from S3 whose GETs fail now and then
    (503s, answers reset mid-body): a direct small GET that fails is finished by botocore's
    retries, for the directory's prefetch and for the reader's own open: every file reads back
    its bytes, each blob lands in the cache once."""
    from artfsd.testing import MountProcess

    url = f"s3://{bucket}/store"
    store = artfs.Store(url, cache=artfs.Cache(str(tmp_path / "cache-w")))
    art = artfs.Artifact("data", type="dataset")
    want = {f"f{i:02d}.bin": os.urandom(20_000 + 331 * i) for i in range(40)}
    for name, data in want.items():
        with art.new_file(f"sub/{name}", mode="wb") as f:
            f.write(data)
    store.log_artifact(art, project="proj")
    env = cli_env(proxy.url, tmp_path, ARTFS_S3_TIMEOUT="20", ARTFS_STORE=url)
    proxy.configure(only=lambda m_, t: m_ == "GET" and "/blobs/" in t, error_rate=0.15, reset_rate=0.15)
    with MountProcess(url, tmp_path / "mnt", cache_dir=tmp_path / "cache", env=env,
                      args=["--refresh", "1"]) as m:
        for name in sorted(want, reverse=True):
            with open(m.path("proj", "data", "v0", "sub", name), "rb") as fh:
                assert fh.read() == want[name], name
        stats = m.stats()
    assert {"error", "reset"} <= set(actions(proxy))
    assert stats["small_fetches"] == len(want)
