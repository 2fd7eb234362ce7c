"""Downloading models from a Hugging Face Hub stand-in on loopback
(fake_hub.py): cache layout shared with huggingface_hub, offline reuse,
tokens, 401/404, a non-ViT model refused before its weights are fetched,
a connection cut mid-file (resumed), a wrong checksum (nothing left that
looks complete), a renamed repository (307 with a relative Location,
followed as huggingface_hub does) and a redirect loop, `main` moving during
a download (the files after the first are fetched by commit), a HEAD with no
size, revisions with a '.' component or a '/' (refs/pr/1), several processes downloading into one
cache at once (a lock per blob, shared with huggingface_hub's), a lock left by
a killed process, no network."""
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

from fake_hub import FakeHub
from vstest import FIXTURE, TMP, VITSERVE, check, done, gen_model, json_lines, vitserve

MODEL = os.path.join(FIXTURE, "model")
IMG = os.path.join(FIXTURE, "images", "a01_chelsea_baseline420.jpg")

bert = os.path.join(TMP, "hub-bert")
shutil.rmtree(bert, ignore_errors=True)
shutil.copytree(MODEL, bert)
cfg = json.load(open(os.path.join(bert, "config.json")))
cfg["architectures"] = ["BertForMaskedLM"]
cfg["model_type"] = "bert"
json.dump(cfg, open(os.path.join(bert, "config.json"), "w"))

hub = FakeHub()
tiny = hub.add("test/tiny-vit", MODEL)
hub.add("test/private-vit", MODEL, private_token="hf_secret")
hub.add("test/cut-vit", MODEL, cut=True)
hub.add("test/badsum-vit", MODEL, badsum=True)
hub.add("test/bert", bert)
hub.add("test/evil-commit", MODEL, commit="../../../escape")
hub.add("test/long-vit", MODEL, extra=100000)
hub.rename("old-org/old-vit", "test/tiny-vit")
hub.rename("loop/a", "loop/b")
hub.redirect_away("away/host", "http://127.0.0.1:9/elsewhere/config.json")
hub.redirect_away("away/relative", "../other/config.json")
hub.redirect_away("away/long", "/" + "x" * 3000)
hub.rename("loop/b", "loop/a")
# Renamed to a name whose Location for preprocessor_config.json is exactly
# 2047 bytes, the longest one kept whole: followed, as the docs say.
# (preprocessor_config.json is asked for at the commit config.json named.)
LONG_NEW = "long-org/" + "v" * (2047 - len("/resolve/" + "0" * 40 + "/preprocessor_config.json") - 1 - 9)
hub.add(LONG_NEW, MODEL)
hub.rename("old-org/long-vit", LONG_NEW)
flaky = hub.add("test/flaky-vit", MODEL, badsum=True)
SHARDED = gen_model("hub-sharded", "--preset", "tiny", "--shards", "2")
flaky_sharded = hub.add("test/flaky-sharded", SHARDED, badsum=True)
OTHER = gen_model("hub-seed2", "--preset", "tiny", "--seed", "2")
moving = hub.add("test/moving-vit", MODEL, moves_to=OTHER)
hub.add("test/nosize-vit", MODEL, nosize=True)
hub.add("test/slow-vit", MODEL, slow=1.0)
slower = hub.add("test/slower-vit", MODEL, slow_cdn=8.0)
pr = hub.add("test/pr-vit", MODEL, branches=("refs/pr/1",))


def fresh_home(name):
    home = os.path.join(TMP, "hf-home-" + name)
    shutil.rmtree(home, ignore_errors=True)
    os.makedirs(home)
    return home


def hub_env(home, extra_env=None):
    env = {"HF_HOME": home, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": "", "HF_TOKEN": ""}
    env.update(extra_env or {})
    return env


def classify(model, home, extra_env=None):
    return vitserve("classify", "--model", model, "--json", "--device", "cpu", IMG,
                    env=hub_env(home, extra_env))


children = []


def start(args, home, stderr):
    """Starts `vitserve args` in the background against the fake hub."""
    p = subprocess.Popen([VITSERVE, *args], stdout=subprocess.PIPE, stderr=stderr,
                         env=dict(os.environ, **hub_env(home)))
    children.append(p)
    return p


def wait_for(cond, seconds):
    deadline = time.time() + seconds
    while not cond() and time.time() < deadline:
        time.sleep(0.05)
    return cond()


try:
    code, out, err = vitserve("classify", "--model", MODEL, "--json", "--device", "cpu", IMG)
    check(code == 0, f"local classify: {err}")
    want = json_lines(out)[0]["predictions"]

    # 1. Download into the huggingface_hub cache layout, then classify.
    home = fresh_home("ok")
    code, out, err = classify("test/tiny-vit", home)
    check(code == 0, f"download + classify failed: {err}")
    check(json_lines(out)[0]["predictions"] == want, "downloaded model answers like the local one")
    base = os.path.join(home, "hub", "models--test--tiny-vit")
    check(open(os.path.join(base, "refs", "main")).read().strip() == tiny.commit, "refs/main holds the commit")
    snap = os.path.join(base, "snapshots", tiny.commit)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        p = os.path.join(snap, name)
        check(os.path.islink(p) and os.readlink(p).startswith("../../blobs/"), f"{name} is a relative blob link")
        check(open(p, "rb").read() == open(os.path.join(MODEL, name), "rb").read(), f"{name} content")
    sha = hashlib.sha256(open(os.path.join(MODEL, "model.safetensors"), "rb").read()).hexdigest()
    check(os.path.isfile(os.path.join(base, "blobs", sha)), "LFS blob stored under its SHA-256")
    check(not [f for f in os.listdir(os.path.join(base, "blobs")) if f.endswith(".incomplete")], "no partial files")
    check(any(p.startswith("/cdn/") for _, p in hub.requests), "followed the redirect to the file storage")

    # 2. Offline: served from the cache, no request made.
    before = len(hub.requests)
    code, out, err = classify("test/tiny-vit", home, {"HF_HUB_OFFLINE": "1"})
    check(code == 0 and json_lines(out)[0]["predictions"] == want, f"offline from cache: {err}")
    check(len(hub.requests) == before, "offline run made no request")
    code, _, err = classify("test/other-vit", home, {"HF_HUB_OFFLINE": "1"})
    check(code == 1 and "HF_HUB_OFFLINE" in err, f"offline miss explains itself: {err}")

    # 3. Private/gated: 401 says a token is needed; HF_TOKEN or the token file work.
    home = fresh_home("private")
    code, _, err = classify("test/private-vit", home)
    check(code == 1 and "401" in err and "token" in err.lower(), f"401 message: {err}")
    code, _, err = classify("test/private-vit", home, {"HF_TOKEN": "hf_secret"})
    check(code == 0, f"with HF_TOKEN: {err}")
    home = fresh_home("tokenfile")
    open(os.path.join(home, "token"), "w").write("hf_secret\n")
    code, _, err = classify("test/private-vit", home)
    check(code == 0, f"with the token file: {err}")

    # 4. 404s: no such model, no such revision.
    home = fresh_home("missing")
    code, _, err = classify("test/no-such-vit", home)
    check(code == 1 and "404" in err and "no such model" in err, f"404 model: {err}")
    code, _, err = classify("test/tiny-vit@no-such-branch", home)
    check(code == 1 and "revision" in err, f"404 revision: {err}")

    # 5. Not a ViT classifier: refused by name, weights never fetched.
    home = fresh_home("bert")
    hub.requests.clear()
    code, _, err = classify("test/bert", home)
    check(code == 1 and "BertForMaskedLM" in err, f"non-ViT refused: {err}")
    check(not any("model.safetensors" in p for _, p in hub.requests), "no weights fetched for a non-ViT")

    # 6. Connection cut mid-file: resumed with a Range request, complete.
    home = fresh_home("cut")
    code, out, err = classify("test/cut-vit", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want, f"resume after a cut: {err}")
    check("resuming" in err, f"the cut was reported: {err}")

    # 7. Wrong checksum: refused, and nothing that looks complete is left.
    home = fresh_home("badsum")
    code, _, err = classify("test/badsum-vit", home)
    check(code == 1 and "checksum" in err, f"checksum mismatch: {err}")
    blobs = os.path.join(home, "hub", "models--test--badsum-vit", "blobs")
    left = os.listdir(blobs) if os.path.isdir(blobs) else []
    check(not any(len(f) == 64 for f in left), f"no complete-looking weight blob left: {left}")

    # 7b. A weight file complete in .incomplete (stopped before the rename):
    #     used without a transfer (a Range past the end gets 416).
    home = fresh_home("complete-part")
    blobs = os.path.join(home, "hub", "models--test--tiny-vit", "blobs")
    os.makedirs(blobs)
    weights = open(os.path.join(MODEL, "model.safetensors"), "rb").read()
    sha = hashlib.sha256(weights).hexdigest()
    open(os.path.join(blobs, sha + ".incomplete"), "wb").write(weights)
    code, out, err = classify("test/tiny-vit", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want,
          f"complete partial file finished: {code} {err}")
    check(os.path.isfile(os.path.join(blobs, sha)), "complete partial file renamed to its blob")

    # 7c. X-Repo-Commit names the snapshot folder: only a 40-hex commit.
    home = fresh_home("evil-commit")
    code, _, err = classify("test/evil-commit", home)
    check(code == 1 and "X-Repo-Commit" in err, f"non-hex commit refused: {code} {err}")
    check(not os.path.exists(os.path.join(home, "escape")), "nothing written outside the cache")

    # 7d. More bytes than announced: stopped, nothing kept.
    home = fresh_home("long")
    code, _, err = classify("test/long-vit", home)
    check(code == 1 and "more than" in err, f"oversized transfer refused: {code} {err}")
    blobs = os.path.join(home, "hub", "models--test--long-vit", "blobs")
    left = [f for f in os.listdir(blobs) if len(f.split(".")[0]) == 64] if os.path.isdir(blobs) else []
    check(not left, f"no weight blob or partial file left: {left}")

    # 7e. A renamed repository: the hub answers 307 with a relative Location
    #     (/new-org/new-name/resolve/...); the HEAD follows it (only relative
    #     redirects: the LFS 302 to file storage is not followed by the HEAD),
    #     and the files land under the name that was asked for.
    home = fresh_home("renamed")
    hub.requests.clear()
    code, out, err = classify("old-org/old-vit", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want,
          f"renamed repository downloaded through its redirect: {code} {err}")
    check(("HEAD", "/old-org/old-vit/resolve/main/config.json") in hub.requests and
          ("HEAD", "/test/tiny-vit/resolve/main/config.json") in hub.requests,
          f"the HEAD followed the 307: {hub.requests[:4]}")
    check(not any(m == "HEAD" and p.startswith("/cdn/") for m, p in hub.requests),
          "the HEAD did not follow the LFS redirect to file storage")
    base = os.path.join(home, "hub", "models--old-org--old-vit")
    check(open(os.path.join(base, "refs", "main")).read().strip() == tiny.commit,
          "cached under the name asked for, at the new repository's commit")
    check(os.path.isfile(os.path.join(base, "snapshots", tiny.commit, "model.safetensors")),
          "weights in the snapshot")
    code, out, err = classify("old-org/old-vit", home, {"HF_HUB_OFFLINE": "1"})
    check(code == 0, f"the renamed repository is then found offline: {err}")

    # 7f. A redirect loop ends with an error, not a hang.
    home = fresh_home("loop")
    code, _, err = classify("loop/a", home)
    check(code == 1 and "redirect" in err, f"redirect loop refused: {code} {err}")

    # 7g. Redirects the HEAD does not follow get an error that says so
    #     (another host; a path-relative Location; a Location too long to
    #     keep whole), never a half-read URL or "no ETag".
    for repo_id, want_err in (("away/host", "127.0.0.1:9/elsewhere"),
                              ("away/relative", "../other/config.json"),
                              ("away/long", "longer than")):
        home = fresh_home(repo_id.replace("/", "-"))
        hub.requests.clear()
        code, _, err = classify(repo_id, home)
        check(code == 1 and want_err in err and "ETag" not in err,
              f"{repo_id}: unfollowed redirect named: {code} {err}")
        check(not any(p.startswith("/x") for _, p in hub.requests),
              f"{repo_id}: the cut Location was not requested: {hub.requests[:3]}")

    # 7h. A snapshot folder that lacks the weights is completed from the hub,
    #     not loaded as it is: a download at a pinned commit that failed
    #     after config.json (no refs/ is written for a commit), single file
    #     or sharded (the index fetched, no shard); and a snapshot that
    #     huggingface_hub filled with config.json only (AutoConfig does).
    code, out, err = vitserve("classify", "--model", SHARDED, "--json", "--device", "cpu", IMG)
    check(code == 0, f"local classify, sharded: {err}")
    want_sharded = json_lines(out)[0]["predictions"]
    for repo_id, repo, expect in (("test/flaky-vit", flaky, want),
                                  ("test/flaky-sharded", flaky_sharded, want_sharded)):
        home = fresh_home(repo_id.replace("/", "-"))
        repo.badsum = True
        code, _, err = classify(f"{repo_id}@{repo.commit}", home)
        check(code == 1 and "checksum" in err, f"{repo_id}: first download fails: {code} {err}")
        code, _, err = classify(f"{repo_id}@{repo.commit}", home, {"HF_HUB_OFFLINE": "1"})
        check(code == 1 and "HF_HUB_OFFLINE" in err and ".bin" not in err,
              f"{repo_id}: offline, the incomplete snapshot is named as such: {code} {err}")
        repo.badsum = False
        code, out, err = classify(f"{repo_id}@{repo.commit}", home)
        check(code == 0 and json_lines(out)[0]["predictions"] == expect,
              f"{repo_id}: the incomplete snapshot is completed on the next run: {code} {err}")
    home = fresh_home("config-only")
    code, _, err = classify("test/tiny-vit", home)
    check(code == 0, f"download: {err}")
    snap = os.path.join(home, "hub", "models--test--tiny-vit", "snapshots", tiny.commit)
    os.unlink(os.path.join(snap, "model.safetensors"))
    os.unlink(os.path.join(snap, "preprocessor_config.json"))
    code, out, err = classify("test/tiny-vit", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want,
          f"a config-only snapshot gets its weights: {code} {err}")
    check(os.path.islink(os.path.join(snap, "model.safetensors")), "weights linked into the snapshot")

    # 7i. A Location of exactly 2047 bytes fits and is followed.
    home = fresh_home("long-ok")
    code, out, err = classify("old-org/long-vit", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want,
          f"a 2047-byte relative Location is followed: {code} {err}")

    # 7j. A revision with a '.' component is refused before a path or URL is
    #     built ("main/." turned refs/main into a folder; curl drops "./"
    #     from URLs, so "." asked the hub for another path).
    for rev in (".", "main/.", "./main", "v1/./x"):
        home = fresh_home("dot")
        hub.requests.clear()
        code, _, err = classify(f"test/tiny-vit@{rev}", home)
        check(code == 1 and "not a folder, nor a valid hub id" in err,
              f"revision '{rev}' refused: {code} {err}")
        check(not hub.requests, f"revision '{rev}': no request made: {hub.requests}")
        check(not os.path.exists(os.path.join(home, "hub")), f"revision '{rev}': nothing written")

    # 7k. `main` moves to another commit after the first file: the others are
    #     fetched by the commit the first one named (as huggingface_hub does),
    #     so the snapshot folder holds one commit's files, not two.
    home = fresh_home("moving")
    hub.requests.clear()
    code, out, err = classify("test/moving-vit", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want,
          f"download while main moves: {code} {err}")
    base = os.path.join(home, "hub", "models--test--moving-vit")
    check(os.listdir(os.path.join(base, "snapshots")) == [moving.commit],
          f"one snapshot, the first commit's: {os.listdir(os.path.join(base, 'snapshots'))}")
    for name in ("config.json", "preprocessor_config.json", "model.safetensors"):
        got = open(os.path.join(base, "snapshots", moving.commit, name), "rb").read()
        check(got == open(os.path.join(MODEL, name), "rb").read(),
              f"{name} is the first commit's, not the one main moved to")
    check(("HEAD", f"/test/moving-vit/resolve/{moving.commit}/model.safetensors") in hub.requests,
          f"the weights were asked for by commit: {hub.requests}")
    check(open(os.path.join(base, "refs", "main")).read() == moving.commit,
          "refs/main names the commit the files came from")

    # 7l. A HEAD that gives no size (no X-Linked-Size, no Content-Length):
    #     refused with a message, before a byte is fetched (a transfer of
    #     unknown size has no bound: it could fill the disk).
    home = fresh_home("nosize")
    hub.requests.clear()
    code, _, err = classify("test/nosize-vit", home)
    check(code == 1 and "config.json" in err and "no size" in err,
          f"a file of unknown size refused: {code} {err}")
    check(not any(m == "GET" for m, _ in hub.requests), f"nothing fetched: {hub.requests}")

    # 7m. Several processes download one model into one cache at once (the
    #     k8s init containers on one ReadWriteMany volume): each blob is
    #     fetched once, under a lock, the others wait and find it complete.
    home = fresh_home("concurrent")
    hub.requests.clear()
    hub.sent.clear()
    errs = [open(os.path.join(TMP, f"hub-concurrent-{i}.err"), "w+") for i in range(3)]
    procs = [start(["info", "--model", "test/slow-vit"], home, e) for e in errs]
    for i, p in enumerate(procs):
        p.communicate(timeout=120)
        errs[i].seek(0)
        check(p.returncode == 0, f"concurrent download {i}: {p.returncode} {errs[i].read()}")
    base = os.path.join(home, "hub", "models--test--slow-vit")
    weights = open(os.path.join(MODEL, "model.safetensors"), "rb").read()
    sha = hashlib.sha256(weights).hexdigest()
    blob = os.path.join(base, "blobs", sha)
    check(hashlib.sha256(open(blob, "rb").read()).hexdigest() == sha, "the weight blob is intact")
    check(hub.sent[f"/cdn/{sha}"] == len(weights),
          f"the weights were sent once: {hub.sent[f'/cdn/{sha}']} bytes for {len(weights)}")
    for name in ("config.json", "preprocessor_config.json"):
        gets = [p for m, p in hub.requests if m == "GET" and p.endswith("/" + name)]
        check(len(gets) == 1, f"{name} fetched once: {gets}")
    check(not [f for f in os.listdir(os.path.join(base, "blobs")) if f.endswith(".incomplete")],
          "no partial files left")

    # 7n. Another process (vitserve or huggingface_hub: the same lock file,
    #     .locks/models--org--name/<etag>.lock) is downloading a blob: this
    #     one waits, then uses the blob the other finished, fetching nothing.
    home = fresh_home("locked")
    hub.requests.clear()
    blobs = os.path.join(home, "hub", "models--test--tiny-vit", "blobs")
    locks = os.path.join(home, "hub", ".locks", "models--test--tiny-vit")
    os.makedirs(blobs)
    os.makedirs(locks)
    holder = open(os.path.join(locks, sha + ".lock"), "w")
    fcntl.flock(holder, fcntl.LOCK_EX)
    errf = open(os.path.join(TMP, "hub-locked.err"), "w+")
    p = start(["classify", "--model", "test/tiny-vit", "--json", "--device", "cpu", IMG], home, errf)
    waiting = wait_for(lambda: "waiting" in open(errf.name).read() or p.poll() is not None, 20)
    check(waiting and p.poll() is None, f"waits for the lock: {p.poll()} {open(errf.name).read()}")
    check(not any(q.startswith("/cdn/") for _, q in hub.requests),
          f"nothing fetched while the lock is held: {hub.requests}")
    open(os.path.join(blobs, sha), "wb").write(weights)   # the other process finishes
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    out, _ = p.communicate(timeout=60)
    check(p.returncode == 0 and json_lines(out.decode())[0]["predictions"] == want,
          f"then uses the blob: {p.returncode} {open(errf.name).read()}")
    check(not any(q.startswith("/cdn/") for _, q in hub.requests),
          f"the weights were not fetched again: {hub.requests}")

    # 7o. A process killed mid-download leaves its lock file and a partial
    #     blob: the next run is not blocked (the kernel released the lock)
    #     and completes the blob.
    home = fresh_home("killed")
    blobs = os.path.join(home, "hub", "models--test--slower-vit", "blobs")
    part = os.path.join(blobs, sha + ".incomplete")
    lockfile = os.path.join(home, "hub", ".locks", "models--test--slower-vit", sha + ".lock")
    p = start(["info", "--model", "test/slower-vit"], home, subprocess.DEVNULL)
    started = wait_for(lambda: os.path.exists(part) and os.path.getsize(part) > 0, 60)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    check(started and os.path.exists(lockfile), "killed while writing the weights, its lock file left")
    slower.slow_cdn = 0
    code, out, err = classify("test/slower-vit", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want,
          f"the next run completes the download: {code} {err}")
    check(hashlib.sha256(open(os.path.join(blobs, sha), "rb").read()).hexdigest() == sha,
          "the completed blob is intact")

    # 7p. A revision holding '/' (a pull request: refs/pr/1) is one segment of
    #     the URL, its '/' sent as %2F as huggingface_hub sends it: the hub
    #     reads .../resolve/refs/pr/1/config.json as revision 'refs'.
    home = fresh_home("pr")
    hub.requests.clear()
    code, out, err = classify("test/pr-vit@refs/pr/1", home)
    check(code == 0 and json_lines(out)[0]["predictions"] == want,
          f"download of revision refs/pr/1: {code} {err}")
    check(("HEAD", "/test/pr-vit/resolve/refs%2Fpr%2F1/config.json") in hub.requests,
          f"the revision is one URL segment: {hub.requests[:2]}")
    ref = os.path.join(home, "hub", "models--test--pr-vit", "refs", "refs", "pr", "1")
    check(open(ref).read() == pr.commit, "recorded in refs/refs/pr/1, as huggingface_hub does")
    code, _, err = classify("test/pr-vit@refs/pr/1", home, {"HF_HUB_OFFLINE": "1"})
    check(code == 0, f"then found offline: {code} {err}")

    # 8. No network: names the endpoint, suggests a folder or offline mode.
    home = fresh_home("nonet")
    code, _, err = classify("test/tiny-vit", home, {"HF_ENDPOINT": "http://127.0.0.1:1"})
    check(code == 1 and "127.0.0.1:1" in err and "--model DIR" in err, f"no network: {err}")
finally:
    for child in children:        # none is left running, whatever failed
        if child.poll() is None:
            child.kill()
            child.wait()
    hub.stop()
done()
