"""Build the local Kubernetes test cluster's container images: a Debian base, and PaxosKV's.

    .venv/bin/python -m tests.k8s.images [--cache DIR]

What: two OCI image-layout archives in `<cache>/images/`, which containerd imports as they are
(`ctr -n k8s.io images import`):
- `debian-python-bookworm.oci.tar`, named localhost/debian-python:bookworm: Debian bookworm made
  by debootstrap (minbase, with python3, python3-venv and ca-certificates) from the machine's own
  Debian mirror, packed here as an image of one uncompressed layer. Built once (about 100 s);
  delete the archive to build it again.
- `paxoskv-<tag>.oci.tar`, named localhost/paxoskv:<tag>: the repo's Dockerfile built on that
  base by buildah (chroot isolation, host network, a private storage in `<cache>/buildah/`,
  nothing pulled from a registry; pip reaches the package index). The tag is a short hash of the
  base image and of the files the build copies (Dockerfile, .dockerignore, pyproject.toml,
  README.md, node/ and operator/ but caches), so unchanged sources reuse the archive and changed
  ones build a
  new one (the last few are kept). A new image is kept only once it passed a check: run as a
  container, its entry point serves /healthz on loopback as UID 10001, with python3 the base's.

Where: /var/cache/paxoskv-k8s (the root of tests.k8s.build's versioned caches) unless `--cache`
names another; each stage's output goes to `<cache>/logs/<stage>.log`. The pytest fixture calls
`ensure_images()`, which builds what is missing and returns the archives and the image's name.

The CA bundle: where HTTPS goes through an intercepting proxy, pip in the build trusts it only
with the machine's CA bundle, so the build mounts it read-only over the image's own; it is never
part of an image.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import platform
import shlex
import shutil
import socket
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import DEFAULT_CACHE as K8S_CACHE
from .build import SUITE, BuildError, Stages, command, debian_mirror, say, sha256

DEFAULT_CACHE = K8S_CACHE.parent
REPO = Path(__file__).resolve().parents[2]  # the checkout this module belongs to
BASE_NAME = f"localhost/debian-python:{SUITE}"
BASE_ARCHIVE = f"debian-python-{SUITE}.oci.tar"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_NAME = "localhost/paxoskv"
# What the Dockerfile copies (see .dockerignore): these files, node/ and operator/ but caches.
SOURCES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
SOURCE_TREES = ("node", "operator")
KEEP_ARCHIVES = 3  # paxoskv archives kept, the newest first
UID = 10001  # the Dockerfile's USER
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Left empty in the base: the container runtime fills them.
EMPTIED = ("dev", "proc", "sys")
# Empty in the base: what debootstrap copied from the machine; containers get their own (an
# absent one would be left behind, mode 0755, in the next layer by buildah's RUN).
MACHINE_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")
# Left out of the base: apt's downloads and lists.
LEFT_OUT = ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*")
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}

# Run in the image as its entry point's user: start `<entrypoint> serve` for a one-member
# cluster on loopback, wait for /healthz, print what the image is made of as JSON.
VERIFY_SCRIPT = """
import json, os, shutil, subprocess, sys, time, urllib.request
entrypoint, port = json.loads(sys.argv[1]), int(sys.argv[2])
url = f"http://127.0.0.1:{port}"
node = subprocess.Popen([*entrypoint, "serve", "--name", "n1", "--peers", f"n1={url}",
                         "--data-dir", "data", "--bootstrap", "--log-level", "warning"])
deadline, healthz = time.monotonic() + 60, None
try:
    while healthz is None and node.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                healthz = answer.status
        except OSError:
            time.sleep(0.2)
finally:
    node.terminate()
    node.wait(10)
python3 = shutil.which("python3") or ""
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "healthz": healthz,
                  "python3": python3, "python3_real": os.path.realpath(python3),
                  "base_prefix": sys.base_prefix, "version": sys.version.split()[0]}))
"""


@dataclass(frozen=True)
class Images:
    """The test cluster's images: `archives` maps "paxoskv" and "base" to their OCI archives;
    `reference` is the PaxosKV image's name in its archive, what pods name."""

    archives: dict[str, Path]
    reference: str
    base_reference: str = BASE_NAME


def source_files(repo: Path) -> list[Path]:
    """The files the image build copies, in a stable order."""
    files = [repo / name for name in SOURCES]
    for tree in SOURCE_TREES:
        for top, dirs, names in os.walk(repo / tree):
            dirs[:] = sorted(d for d in dirs
                             if d != "__pycache__" and not d.endswith(".egg-info"))
            files.extend(Path(top) / name for name in sorted(names))
    return files


def source_tag(repo: Path, base_digest: str) -> str:
    """A short hash of the base image and of the files the build copies."""
    h = hashlib.sha256(f"{base_digest}\n".encode())
    for path in source_files(repo):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise BuildError(f"{path} not found: {repo} is not a complete checkout") from None
        h.update(f"{path.relative_to(repo).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:12]


def check_checkout(repo: Path) -> None:
    """The files the image build copies are all there (a copy of the repo may lack some):
    said before anything is built."""
    missing = [*(name for name in SOURCES if not (repo / name).is_file()),
               *(f"{tree}/" for tree in SOURCE_TREES if not (repo / tree).is_dir())]
    if missing:
        raise BuildError(f"{repo} is not a complete checkout: {', '.join(missing)} not found "
                         "(the image build needs them)")


def archive_manifest(archive: Path) -> tuple[str, dict[str, Any]]:
    """The digest and the manifest of the (only) image in an OCI image-layout archive."""
    try:
        with tarfile.open(archive, "r:") as tar:

            def read(name: str) -> Any:
                f = tar.extractfile(name)
                if f is None:
                    raise KeyError(name)
                return json.load(f)

            digest: str = read("index.json")["manifests"][0]["digest"]
            manifest: dict[str, Any] = read(f"blobs/sha256/{digest.removeprefix('sha256:')}")
    except (OSError, KeyError, IndexError, ValueError, tarfile.TarError) as e:
        raise BuildError(f"{archive} is not a readable OCI archive ({e}); delete it "
                         "to build it again") from None
    return digest, manifest


def mounts_under(path: Path) -> list[str]:
    """Mount points at or under `path` (left by an interrupted debootstrap), deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 for a space, ...
        if point == str(path) or point.startswith(f"{path}/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def blob(data: bytes) -> tuple[str, bytes]:
    return f"sha256:{hashlib.sha256(data).hexdigest()}", data


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(mtime)
    tar.addfile(info, _BytesReader(data))


class _BytesReader:
    """The least of a file object that TarFile.addfile reads from."""

    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        chunk, self.offset = self.data[self.offset:end], min(end, len(self.data))
        return chunk


def pack_layer(rootfs: Path, layer: Path) -> None:
    """A tar of `rootfs` as an image layer: numeric owners, hard links kept, sockets left out,
    the EMPTIED directories without their contents."""
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:

        def add(path: Path, name: str) -> None:
            info = tar.gettarinfo(str(path), name)
            if info is None:  # a socket or a fifo's kin: nothing an image carries
                return
            info.uname = info.gname = ""
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            if info.isdir() and name not in EMPTIED:
                for entry in sorted(os.scandir(path), key=lambda e: e.name):
                    add(Path(entry.path), f"{name}/{entry.name}" if name else entry.name)

        for entry in sorted(os.scandir(rootfs), key=lambda e: e.name):
            add(Path(entry.path), entry.name)


def write_oci_archive(archive: Path, layer: Path, config: dict[str, Any], name: str) -> str:
    """An OCI image-layout archive of one image: `config` and the uncompressed `layer`, named
    `name`; returns its manifest digest."""
    layer_digest = f"sha256:{sha256(layer)}"
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}
    config_digest, config_blob = blob(json.dumps(config, separators=(",", ":")).encode())
    manifest_digest, manifest_blob = blob(json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config_blob)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.stat().st_size}],
    }, separators=(",", ":")).encode())
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": MANIFEST_TYPE, "digest": manifest_digest,
                            "size": len(manifest_blob),
                            "annotations": {"org.opencontainers.image.ref.name": name,
                                            "io.containerd.image.name": name}}]}
    now = time.time()
    partial = archive.with_name(f".{archive.name}.partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}', now)
        add_bytes(tar, "index.json", json.dumps(index, separators=(",", ":")).encode(), now)
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(now)
            tar.addfile(info)
        for digest, data in ((config_digest, config_blob), (manifest_digest, manifest_blob)):
            add_bytes(tar, f"blobs/sha256/{digest.removeprefix('sha256:')}", data, now)
        info = tar.gettarinfo(str(layer), f"blobs/sha256/{layer_digest.removeprefix('sha256:')}")
        info.uname = info.gname = ""
        info.uid = info.gid = 0
        info.mode = 0o644
        with layer.open("rb") as f:
            tar.addfile(info, f)
    partial.replace(archive)
    return manifest_digest


def megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.0f} MB"


class ImageBuilder(Stages):
    """The cache directory and the stages that fill it."""

    def __init__(self, cache: Path, repo: Path = REPO) -> None:
        super().__init__(cache / "logs")
        self.cache = cache
        self.repo = repo
        self.images = cache / "images"
        self.work = cache / "work"
        self.rootfs = self.work / "rootfs"
        self.storage = cache / "buildah"
        self.base_archive = self.images / BASE_ARCHIVE

    def buildah(self, stage: str, args: list[str], capture: bool = False) -> str:
        """buildah on the private storage, with a policy that accepts the local images and no
        registry to resolve short names against."""
        argv = ["buildah", "--root", str(self.storage / "root"),
                "--runroot", str(self.storage / "run"), "--storage-driver", "overlay", *args]
        env = {**os.environ,
               "CONTAINERS_STORAGE_CONF": str(self.storage / "storage.conf"),
               "CONTAINERS_REGISTRIES_CONF": str(self.storage / "registries.conf")}
        return self.run(stage, argv, cwd=self.repo, env=env, capture=capture,
                        shown=f"buildah {args[0]} … {args[-1]}")

    def write_buildah_config(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        (self.storage / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{self.storage / "root"}"\n'
            f'runroot = "{self.storage / "run"}"\n')
        (self.storage / "registries.conf").write_text("unqualified-search-registries = []\n")
        (self.storage / "policy.json").write_text(
            '{"default": [{"type": "insecureAcceptAnything"}]}\n')

    @property
    def policy(self) -> list[str]:
        return ["--signature-policy", str(self.storage / "policy.json")]

    # -- stages ---------------------------------------------------------------------------

    def prerequisites(self, commands: list[str]) -> None:
        """Root, and the commands (each from the Debian package of its name), installed if
        missing."""
        if os.geteuid() != 0:
            raise BuildError("building the images needs root (debootstrap, buildah)")
        self.install_missing(commands, {command: command for command in commands})

    def clear_rootfs(self) -> None:
        for point in mounts_under(self.rootfs):
            self.run("base", ["umount", "--lazy", point])
        shutil.rmtree(self.rootfs, ignore_errors=True)
        if self.rootfs.exists():
            raise BuildError(f"base: cannot remove {self.rootfs}; remove it by hand")

    def build_base(self) -> None:
        mirror, keyring = debian_mirror()
        with self.stage("base", f"debootstrap {SUITE} from {mirror} "
                        f"(log: {self.logs / 'base.log'})"):
            self.clear_rootfs()
            self.rootfs.parent.mkdir(parents=True, exist_ok=True)
            debootstrap = ["debootstrap", "--variant=minbase",
                           f"--include={','.join(BASE_PACKAGES)}", f"--keyring={keyring}",
                           SUITE, str(self.rootfs), mirror]
            try:
                self.run("base", ["nice", "-n", "19", *debootstrap])
                for pattern in LEFT_OUT:
                    for path in self.rootfs.glob(pattern):
                        path.unlink()
                for name in MACHINE_FILES:
                    (self.rootfs / name).unlink(missing_ok=True)
                    (self.rootfs / name).touch(0o644)
                python3 = self.run("base", [
                    "dpkg-query", f"--admindir={self.rootfs / 'var/lib/dpkg'}", "-W",
                    "-f", "${Version}", "python3"], capture=True)
                layer = self.work / "layer.tar"
                pack_layer(self.rootfs, layer)
            finally:
                self.clear_rootfs()
            created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            config = {
                "created": created,
                "architecture": ARCHITECTURES.get(platform.machine(), platform.machine()),
                "os": "linux",
                "config": {"Env": [f"PATH={BASE_PATH}", "LANG=C.UTF-8"], "Cmd": ["python3"],
                           "Labels": {"org.opencontainers.image.title": "debian-python",
                                      "org.opencontainers.image.version": f"{SUITE}"}},
                "history": [{"created": created, "created_by": shlex.join(debootstrap),
                             "comment": f"tests.k8s.images (python3 {python3})"}],
            }
            self.images.mkdir(parents=True, exist_ok=True)
            try:
                write_oci_archive(self.base_archive, layer, config, BASE_NAME)
            finally:
                layer.unlink(missing_ok=True)
        say(f"base: {BASE_NAME} (python3 {python3}), {megabytes(self.base_archive)}, "
            f"in {self.base_archive}")

    def load_base(self) -> None:
        """The base in the private storage, loaded from its archive unless already there."""
        image_id = archive_manifest(self.base_archive)[1]["config"]["digest"]
        if self.stored_id(BASE_NAME) == image_id.removeprefix("sha256:"):
            return
        with self.stage("load", f"loading {BASE_NAME} into {self.storage}"):
            self.buildah("load", ["pull", *self.policy, "--quiet",
                                  f"oci-archive:{self.base_archive}"])
            self.buildah("load", ["tag", image_id.removeprefix("sha256:"), BASE_NAME])

    def stored_id(self, name: str) -> str | None:
        """The ID of image `name` in the private storage, None if it has none."""
        try:
            return self.buildah("load", ["inspect", "--type", "image", "--format",
                                         "{{.FromImageID}}", name], capture=True).strip()
        except BuildError:
            return None

    def build_image(self, tag: str, archive: Path) -> None:
        reference = f"{IMAGE_NAME}:{tag}"
        self.write_buildah_config()
        self.buildah("build", ["rm", "--all"])  # working containers an interrupted run left
        self.load_base()
        with self.stage("build", f"buildah bud {reference} from {self.repo} "
                        f"(log: {self.logs / 'build.log'})"):
            volumes = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"] if CA_BUNDLE.is_file() else []
            self.buildah("build", [
                "bud", *self.policy, "--pull-never", "--isolation", "chroot",
                "--network", "host", "--build-arg", f"BASE={BASE_NAME}",
                "--build-arg", f"REVISION={tag}", *volumes,
                "-f", str(self.repo / "Dockerfile"), "-t", reference, str(self.repo)])
        try:
            with self.stage("verify", f"running {reference}'s entry point (serve, /healthz)"):
                self.verify(reference)
            with self.stage("push", f"writing {archive}"):
                partial = archive.with_name(f".{archive.name}.partial")
                partial.unlink(missing_ok=True)
                self.buildah("push", ["push", *self.policy, reference,
                                      f"oci-archive:{partial}:{reference}"])
                partial.replace(archive)
        finally:  # the archive is what is kept, a failed image is not
            try:
                self.buildah("push", ["rmi", reference])
                self.buildah("push", ["rmi", "--prune"])
            except BuildError:
                pass
        old = sorted((p for p in self.images.glob(f"{IMAGE_NAME.split('/')[-1]}-*.oci.tar")
                      if p != archive), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in old[KEEP_ARCHIVES - 1:]:
            path.unlink()

    def verify(self, reference: str) -> None:
        """Run the image's entry point as `serve` in a container and check what it reports."""
        inspected = self.buildah("verify", ["inspect", "--type", "image", reference],
                                 capture=True)
        config: dict[str, Any] = json.loads(inspected)["OCIv1"]["config"]
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        entrypoint = config.get("Entrypoint") or []
        with socket.socket() as s:  # a free port on loopback (the container shares the network)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        container = self.buildah("verify", ["from", *self.policy, "--pull-never", "--name",
                                            "paxoskv-verify", reference],
                                 capture=True).strip().splitlines()[-1]
        try:
            output = self.buildah("verify", [
                "run", "--isolation", "chroot", container, "--", "python3", "-c",
                VERIFY_SCRIPT, json.dumps(entrypoint), str(port)], capture=True)
        finally:
            self.buildah("verify", ["rm", container])
        log = self.logs / "verify.log"
        try:
            report: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise BuildError(f"verify: the check printed no report; see {log}") from None
        problems = []
        if config.get("User") != f"{UID}:{UID}" or (report["uid"], report["gid"]) != (UID, UID):
            problems.append(f"runs as {report['uid']}:{report['gid']} (image user "
                            f"{config.get('User')!r}), not {UID}:{UID}")
        if report["healthz"] != 200:
            problems.append(f"{shlex.join(entrypoint)} serve did not answer /healthz "
                            f"(got {report['healthz']})")
        if not env.get("PATH", "").endswith(f":{BASE_PATH}"):
            problems.append(f"PATH {env.get('PATH')!r} does not end with the base's {BASE_PATH}")
        if not report["python3_real"].startswith("/usr/bin/") or report["base_prefix"] != "/usr":
            problems.append(f"python3 is {report['python3']} -> {report['python3_real']} "
                            f"(base prefix {report['base_prefix']}), not the base's /usr/bin")
        if problems:
            raise BuildError(f"verify: {reference} {'; '.join(problems)}; see {log}")
        say(f"verify: {shlex.join(entrypoint)} serve answered /healthz as UID {report['uid']}, "
            f"python3 {report['version']} from {report['python3']} -> {report['python3_real']}")

    def ensure(self) -> Images:
        started = time.monotonic()
        check_checkout(self.repo)
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.cache / "images.lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"waiting for another build of the images in {self.cache}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            built = not self.base_archive.is_file()
            if built:
                self.prerequisites(["debootstrap", "buildah"])
                self.build_base()
            tag = source_tag(self.repo, archive_manifest(self.base_archive)[0])
            archive = self.images / f"{IMAGE_NAME.split('/')[-1]}-{tag}.oci.tar"
            if archive.is_file():
                say(f"cached: {IMAGE_NAME}:{tag} in {archive} ({megabytes(archive)}), "
                    f"{BASE_NAME} in {self.base_archive}")
            else:
                built = True
                say(f"to build: {IMAGE_NAME}:{tag} (its sources changed or it is new)")
                self.prerequisites(["buildah"])
                self.build_image(tag, archive)
                say(f"built {IMAGE_NAME}:{tag}, {megabytes(archive)}, in {archive}")
            if built:
                say(f"images ready in {time.monotonic() - started:.0f} s")
        return Images(archives={"paxoskv": archive, "base": self.base_archive},
                      reference=f"{IMAGE_NAME}:{tag}")


def ensure_images(cache: Path | None = None) -> Images:
    """The test cluster's images, built first if missing or out of date (BuildError if that
    fails); `cache` defaults to /var/cache/paxoskv-k8s."""
    return ImageBuilder((cache or DEFAULT_CACHE).absolute()).ensure()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.images", description=(
        "Build the local Kubernetes test cluster's images (a Debian base and PaxosKV's) "
        "as OCI archives, unless they are up to date."))
    parser.add_argument("--cache", type=Path,
                        help=f"cache directory (default: {DEFAULT_CACHE})")
    args = parser.parse_args(argv)

    def build_and_show() -> None:
        images = ensure_images(args.cache)
        print(images.reference)
        for name, path in images.archives.items():
            print(f"{name}\t{path}")

    return command(build_and_show, "interrupted; the next run starts the unfinished image "
                   "again")


if __name__ == "__main__":
    sys.exit(main())
