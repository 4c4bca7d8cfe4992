#!/usr/bin/env python3
"""Builds the Dockerfile's runtime stage without a container engine and runs the image in it.

Where no container engine is available this is how the Dockerfile is kept honest: the runtime
stage's instructions are read from the Dockerfile itself and carried out in a chroot.

* ``FROM debian:bookworm-slim``: a minbase Debian 12 tree made by ``mmdebstrap`` (what the
  official slim image is built from);
* ``RUN``: run in the tree with ``/bin/sh -c`` and the ``ENV`` values set so far;
* ``COPY``: from the checkout, or with ``--from=build`` from what the build stage leaves behind
  (``/src/...`` is the checkout after ``make build``, ``/usr/local/bin/soustitre`` the binary
  ``target/release/soustitre``: the build stage is ``cargo build --release --locked`` on the same
  Debian release);
* ``ENV``, ``USER``, ``WORKDIR``, ``ENTRYPOINT`` are kept for the run; ``VOLUME``, ``EXPOSE``,
  ``ARG`` and ``CMD`` need nothing.

Then the image runs as its ``USER`` through its ``ENTRYPOINT``, with the model mirror bound at
``/mirror`` (``SOUSTITRE_MODEL_MIRROR=/mirror``) and a speech file at ``/data``: the entry point
fetches and verifies the models into the model volume, ``soustitre transcribe`` writes WebVTT,
and the check asserts that the subtitles hold the expected words. It also checks that the
GStreamer elements the pipelines use are found in the image.

Usage (root; needs ``mmdebstrap`` and access to the Debian mirror)::

    python3 scripts/image_check.py [--mirror ../shared/models] [--root DIR] [--keep]

Exit status 0 when the image works, 1 with the failing step otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEBIAN = "http://deb.debian.org/debian"
BASES = {"debian:bookworm-slim": "bookworm"}
# GStreamer elements the pipelines and the SFU attachment need at run time.
ELEMENTS = ["uridecodebin", "audioconvert", "audioresample", "appsink", "audiobuffersplit",
            "opusdec", "rtpopusdepay", "rtpjitterbuffer", "webrtcbin", "nicesrc", "dtlssrtpdec"]
SPEECH = "utterances/synth/en_01"
EXPECTED = ["budget", "proposal", "finance", "committee"]


class CheckError(Exception):
    pass


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not cur and (not line or line.startswith("#")):
            continue
        if cur and line.startswith("#"):
            continue
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def runtime_stage(instrs: list[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """The last stage: its base image and instructions."""
    starts = [i for i, (k, _) in enumerate(instrs) if k == "FROM"]
    if not starts:
        raise CheckError("Dockerfile has no FROM")
    first = starts[-1]
    base = instrs[first][1].split()[0]
    return base, instrs[first + 1:]


def build_output(path: str) -> Path:
    """Where a path of the build stage's filesystem is found after `make build`."""
    if path.rstrip("/") == "/usr/local/bin/soustitre":
        return REPO / "target/release/soustitre"
    if path.startswith("/src/"):
        return REPO / path[len("/src/"):]
    raise CheckError(f"COPY --from=build {path}: not a path the build stage is known to leave")


def copy(src: Path, dest: Path) -> None:
    if not src.exists():
        raise CheckError(f"COPY source {src} does not exist (run `make build` first)")
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            target = dest / item.name
            if item.is_symlink():
                if target.exists() or target.is_symlink():
                    target.unlink()
                os.symlink(os.readlink(item), target)
            elif item.is_dir():
                shutil.copytree(item, target, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(item, target)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def parse_env(args: str) -> dict[str, str]:
    env = {}
    for tok in shlex.split(args):
        k, sep, v = tok.partition("=")
        if not sep:
            raise CheckError(f"ENV {args}: only the KEY=VALUE form is supported")
        env[k] = v
    return env


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, text=True, **kw)


class Tree:
    """A root filesystem with /proc, /dev and the host's resolver while commands run in it."""

    def __init__(self, root: Path):
        self.root = root

    def run(self, script: str, env: dict[str, str], user: str | None = None,
            workdir: str = "/", binds: dict[str, Path] | None = None,
            capture: bool = False) -> subprocess.CompletedProcess:
        binds = binds or {}
        mounts = [f"mount -t proc proc {shlex.quote(str(self.root / 'proc'))}",
                  f"mount --rbind /dev {shlex.quote(str(self.root / 'dev'))}"]
        for inside, outside in binds.items():
            target = self.root / inside.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {shlex.quote(str(outside))} {shlex.quote(str(target))}")
        env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
        inner = f"cd {shlex.quote(workdir)} && exec /bin/sh -c {shlex.quote(script)}"
        userspec = f"--userspec={user}" if user else ""
        chroot = (f"exec chroot {userspec} {shlex.quote(str(self.root))} /usr/bin/env -i "
                  f"{env_args} /bin/sh -c {shlex.quote(inner)}")
        outer = " && ".join(mounts + [chroot])
        return sh(["unshare", "--mount", "--propagation", "private", "sh", "-c", outer],
                  capture_output=capture)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", default=str(REPO.parent / "shared/models"),
                    help="model mirror directory bound at /mirror (default ../shared/models)")
    ap.add_argument("--corpus", default=str(REPO.parent / "shared/corpus/dev"),
                    help="corpus holding the speech file used for the run")
    ap.add_argument("--root", help="directory for the tree (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the tree afterwards")
    a = ap.parse_args()

    if os.geteuid() != 0:
        print("image-check: must run as root (chroot, mounts)", file=sys.stderr)
        return 1
    if not shutil.which("mmdebstrap"):
        print("image-check: mmdebstrap is missing (apt-get install mmdebstrap)", file=sys.stderr)
        return 1
    work = Path(a.root).resolve() if a.root else Path(tempfile.mkdtemp(prefix="soustitre-image-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "rootfs"
    data = work / "data"
    try:
        return check(root, data, Path(a.mirror), Path(a.corpus))
    except CheckError as e:
        print(f"image-check: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"image-check: tree kept in {root}")


def check(root: Path, data: Path, mirror: Path, corpus: Path) -> int:
    base, stage = runtime_stage(instructions(REPO / "Dockerfile"))
    suite = BASES.get(base)
    if suite is None:
        raise CheckError(f"runtime base image {base} has no known Debian suite")
    print(f"image-check: {base}: mmdebstrap --variant=minbase {suite}", flush=True)
    if root.exists():
        shutil.rmtree(root)
    r = sh(["mmdebstrap", "--variant=minbase", "--quiet", suite, str(root), DEBIAN])
    if r.returncode != 0:
        raise CheckError("mmdebstrap failed")
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    tree = Tree(root)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    user, workdir, entrypoint = None, "/", None
    for word, args in stage:
        if word == "RUN":
            print(f"image-check: RUN {args[:100]}{'...' if len(args) > 100 else ''}", flush=True)
            r = tree.run(args, env, user=user, workdir=workdir)
            if r.returncode != 0:
                raise CheckError(f"RUN exited with {r.returncode}: {args}")
        elif word == "COPY":
            parts = shlex.split(args)
            from_build = any(p == "--from=build" for p in parts)
            paths = [p for p in parts if not p.startswith("--")]
            *srcs, dest = paths
            for s in srcs:
                src = build_output(s) if from_build else REPO / s
                target = root / dest.lstrip("/")
                if dest.endswith("/") and src.is_file():
                    target = target / src.name
                print(f"image-check: COPY {src} -> {dest}", flush=True)
                copy(src, target)
        elif word == "ENV":
            env.update(parse_env(args))
        elif word == "USER":
            user = args
        elif word == "WORKDIR":
            workdir = args
        elif word == "ENTRYPOINT":
            entrypoint = json.loads(args)
        elif word in ("VOLUME", "EXPOSE", "CMD", "ARG", "LABEL"):
            continue
        else:
            raise CheckError(f"instruction {word} is not supported by this check")
    if entrypoint is None:
        raise CheckError("runtime stage has no ENTRYPOINT")
    uid = user
    if user and not user.isdigit():
        r = tree.run(f"id -u {shlex.quote(user)}", env, capture=True)
        if r.returncode != 0:
            raise CheckError(f"USER {user} does not exist in the image")
        uid = r.stdout.strip()
        gid = tree.run(f"id -g {shlex.quote(user)}", env, capture=True).stdout.strip()
        userspec = f"{uid}:{gid}"
    else:
        userspec = user
    if uid in (None, "0", "root"):
        raise CheckError("the image runs as root")

    data.mkdir(parents=True, exist_ok=True)
    shutil.copy2(corpus / f"{SPEECH}.wav", data / "speech.wav")
    os.chmod(data, 0o777)
    run_env = dict(env, SOUSTITRE_MODEL_MIRROR="/mirror",
                   SOUSTITRE_MODEL_BUNDLES="whisper-base silero-vad")
    run_env.setdefault("HOME", workdir)
    binds = {"/mirror": mirror.resolve(), "/data": data}

    def image(args: list[str], capture: bool = True) -> subprocess.CompletedProcess:
        cmd = " ".join(shlex.quote(x) for x in entrypoint + args)
        return tree.run(cmd, run_env, user=userspec, workdir=workdir, binds=binds,
                        capture=capture)

    r = image(["--version"])
    if r.returncode != 0:
        raise CheckError(f"`soustitre --version` failed: {r.stderr.strip()}")
    print(f"image-check: {r.stdout.strip()}", flush=True)
    r = image(["transcribe", "/data/speech.wav", "--lang", "en", "--vtt", "/data/speech.vtt",
               "-q"])
    if r.returncode != 0:
        raise CheckError(f"transcribe failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    vtt = (data / "speech.vtt").read_text() if (data / "speech.vtt").exists() else ""
    lower = vtt.lower()
    absent = [w for w in EXPECTED if w not in lower]
    if not vtt.startswith("WEBVTT") or absent:
        raise CheckError(f"subtitles lack {absent}: {vtt[:400]!r}")
    print("image-check: models fetched into the volume and verified; transcribe wrote "
          f"{len(vtt)} bytes of WebVTT with the expected words", flush=True)
    # the image has no gst-inspect-1.0: add it (a binary, no plugins) to list what the image's
    # plugins provide
    r = tree.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                 "--no-install-recommends gstreamer1.0-tools >/dev/null", env)
    if r.returncode != 0:
        raise CheckError("could not add gst-inspect-1.0 to inspect the plugins")
    missing = [el for el in ELEMENTS
               # not --exists: it also wants the plugin's version to be GStreamer's (libnice's
               # plugin has its own)
               if image(["gst-inspect-1.0", el]).returncode != 0]
    if missing:
        raise CheckError(f"GStreamer elements missing in the image: {', '.join(missing)}")
    print(f"image-check: GStreamer elements present: {' '.join(ELEMENTS)}", flush=True)
    print("image-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
