"""Build, once, the binaries of the local Kubernetes 1.20.2 test cluster from Debian's packages.

    .venv/bin/python -m tests.k8s.build [--cache DIR]

What: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl
built from Debian bookworm's `kubernetes` source package with Debian's Go 1.19; etcd 3.4 taken
from Debian's `etcd-server` package; the pause container's binary compiled (static) from the
same source tree. All eight land in `<cache>/bin/`, with `MANIFEST.json` (package versions,
sha256 of each binary, build date).

Where: a versioned cache outside the repo, /var/cache/paxoskv-k8s/1.20.2 unless `--cache` or
PAXOSKV_K8S_CACHE names another. Sources, toolchain and Go's build cache stay in
`<cache>/work/` so a rebuild is fast; each stage's output goes to `<cache>/logs/<stage>.log`.
When every binary matches the manifest the command does nothing; otherwise it builds only the
missing ones (about 10 minutes of CPU from cold, most of it kube-apiserver's code generation).

Why Debian's sources: the machines this runs on reach Debian's archive but not GitHub,
dl.k8s.io or the Go module proxy. A private apt configuration (its own sources.list with a
deb-src line for bookworm on the machine's own mirror, its own lists and cache) fetches them
without touching the machine's apt state, and works on a newer Debian too.

The reflect2 fix: Kubernetes 1.20 vendors github.com/modern-go/reflect2 1.0.1, which does not
know the map internals of Go 1.18 and later: built with Go 1.19, the apiserver crashes (SIGSEGV
in reflect2.UnsafeIterate) on the first custom-resource request. The vendored copy is replaced
with Debian's 1.0.2 (golang-github-modern-go-reflect2-dev), which does.

The kubelet fix (`SOURCE_FIXES`): 1.20.0-1.20.2 keep a deleted pod in the API until its sandbox
is removed too (kubernetes/kubernetes#92817), but the sandbox of a pod not yet marked deleted
when its container went is removed only by the container garbage collection, once a minute:
the pod lingers up to a minute after its containers stopped (the 1.20 regression
kubernetes/kubernetes#97288, which upstream reverted, #97980). Here a namespace's deletion
took 10-94 s. The check is taken out of kubelet's PodResourcesAreReclaimed, as in 1.19; the
sandboxes are still removed, only not waited for. A binary built before a fix was added is
rebuilt (the manifest records each binary's fixes).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

KUBE_VERSION = "1.20.2"
SUITE = "bookworm"
DEFAULT_CACHE = Path("/var/cache/paxoskv-k8s") / KUBE_VERSION
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                 "kube-proxy", "kubectl")
BINARIES = (*KUBE_BINARIES, "etcd", "pause")
GO_PACKAGES = ("golang-1.19-go", "golang-1.19-src")
REFLECT2_PACKAGE = "golang-github-modern-go-reflect2-dev"
# Changes to the source tree, by binary: (file, text, replacement), applied before building it.
SANDBOX_CHECK = "".join(f"{line}\n" for line in [
    "\t// pod's sandboxes should be deleted",
    "\tif len(runtimeStatus.SandboxStatuses) > 0 {",
    "\t\tvar sandboxStr string",
    "\t\tfor _, sandbox := range runtimeStatus.SandboxStatuses {",
    '\t\t\tsandboxStr += fmt.Sprintf("%+v ", *sandbox)',
    "\t\t}",
    '\t\tklog.V(3).Infof("Pod %q is terminated, but some pod sandboxes have not been cleaned '
    'up: %s", format.Pod(pod), sandboxStr)',
    "\t\treturn false",
    "\t}"])
SOURCE_FIXES: dict[str, dict[str, tuple[str, str, str]]] = {"kubelet": {
    "no-sandbox-wait": ("pkg/kubelet/kubelet_pods.go", SANDBOX_CHECK,
                        "\t// paxoskv-k8s: no wait for the sandboxes' removal (#97288)\n"),
}}
# What the build runs: Kubernetes' make scripts need rsync, `gcc -static` needs libc.a,
# dpkg-source unpacks the source package.
BUILD_PACKAGES = ("make", "rsync", "gcc", "libc6-dev", "dpkg-dev", "xz-utils")
BUILD_COMMANDS = {"make": "make", "rsync": "rsync", "gcc": "gcc", "dpkg-source": "dpkg-dev",
                  "xz": "xz-utils"}  # what the build runs of them, by package
# Suites that mark an apt source as a Debian archive (security and -updates are skipped).
DEBIAN_SUITES = {"bullseye", "bookworm", "trixie", "forky", "sid",
                 "oldstable", "stable", "testing", "unstable"}
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class BuildError(Exception):
    """An expected failure (a missing prerequisite, a failing step), said in one line."""


def say(message: str) -> None:
    print(f"k8s-build: {message}", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def debian_mirror() -> tuple[str, str]:
    """The URI of the machine's Debian archive and the keyring that signs it, read from its apt
    sources in either format (one-line `.list`, deb822 `.sources`)."""
    etc = Path("/etc/apt")
    entries: list[tuple[str, list[str], str]] = []  # (URI, suites, Signed-By)
    for path in [etc / "sources.list", *sorted(etc.glob("sources.list.d/*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            m = re.match(r"\s*deb(?:-src)?\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                options = dict(o.split("=", 1) for o in (m[1] or "").split() if "=" in o)
                entries.append((m[2], [m[3]], options.get("signed-by", "")))
    for path in sorted(etc.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            key = ""
            for line in stanza.splitlines():
                if line.startswith("#"):
                    continue
                if line[:1].isspace() and key:  # a continuation line
                    fields[key] += "\n" + line.strip()
                else:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            if {"deb", "deb-src"} & set(fields.get("types", "").split()):
                entries.extend((uri, fields.get("suites", "").split(), fields.get("signed-by", ""))
                               for uri in fields.get("uris", "").split())
    for uri, suites, signed_by in entries:
        if DEBIAN_SUITES & set(suites):
            # Signed-By may also be fingerprints or an inline key: only a file path carries over.
            keyring = signed_by.split()[0] if signed_by.startswith("/") else DEBIAN_KEYRING
            return uri, keyring
    raise BuildError("no Debian archive found in /etc/apt/sources.list or "
                     "/etc/apt/sources.list.d/ (this build needs Debian's packages)")


def deb_version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True,
                          capture_output=True, text=True).stdout.strip()


def acquire_settings(apt_config: str) -> list[str]:
    """The Acquire:: lines of `apt-config dump` under APT_CONFIG (empty: the machine's),
    but for the index targets (what to download, not how)."""
    dump = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, check=True,
                          env={**os.environ, "APT_CONFIG": apt_config})
    return [line for line in dump.stdout.splitlines()
            if line.startswith("Acquire::") and not line.startswith("Acquire::IndexTargets")]


def installed(package: str) -> bool:
    query = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Status}", package],
                           capture_output=True, text=True)
    return query.stdout == "installed"


class Stages:
    """Steps run in named stages: each stage's output in `<logs>/<stage>.log`, a line of
    progress when it starts and ends, a one-line BuildError when a step fails."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs

    @contextmanager
    def stage(self, name: str, doing: str) -> Iterator[None]:
        """A stage: a fresh log, a line when it starts and one with its elapsed seconds."""
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.logs / f"{name}.log").unlink(missing_ok=True)
        say(f"{name}: {doing}")
        started = time.monotonic()
        yield
        say(f"{name}: done in {time.monotonic() - started:.0f} s")

    def run(self, stage: str, argv: list[str], cwd: Path | None = None,
            env: Mapping[str, str] | None = None, capture: bool = False,
            shown: str | None = None) -> str:
        """Run a step, its output (with `capture`, its stderr only) appended to the stage's
        log; returns its stdout when captured. A failure names the step as `shown` (default:
        the whole command, which the log holds anyway)."""
        log = self.logs / f"{stage}.log"
        self.logs.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            out.write(f"$ {shlex.join(argv)}\n")
            out.flush()
            try:
                done = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE if capture else out,
                                      stderr=out if capture else subprocess.STDOUT, text=True)
            except FileNotFoundError as e:
                raise BuildError(f"{stage}: cannot run {argv[0]}: {e.filename} not found") from None
            if capture:
                out.write(done.stdout)
        if done.returncode != 0:
            raise BuildError(f"{stage}: `{shown or shlex.join(argv)}` failed "
                             f"(exit {done.returncode}); see {log}")
        return done.stdout if capture else ""

    def install_missing(self, packages: Sequence[str],
                        commands: Mapping[str, str] | None = None) -> None:
        """Install the Debian `packages` that are missing, in a "prerequisites" stage; then
        check that `commands` (command -> its package) are on the PATH."""
        if shutil.which("dpkg-query") is None:
            raise BuildError("dpkg-query not found: this build needs a Debian machine")
        missing = [p for p in packages if not installed(p)]
        if missing and os.geteuid() != 0:
            raise BuildError(f"missing prerequisites: apt-get install {' '.join(missing)}")
        if missing:
            names = " ".join(missing)
            with self.stage("prerequisites", f"installing missing Debian packages: {names}"):
                env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
                install = ["apt-get", "-q", "install", "-y", "--no-install-recommends", *missing]
                try:
                    self.run("prerequisites", install, env=env)
                except BuildError:  # the machine's package lists may be empty or stale
                    self.run("prerequisites", ["apt-get", "-q", "update"], env=env)
                    self.run("prerequisites", install, env=env)
        if absent := {c: p for c, p in (commands or {}).items() if shutil.which(c) is None}:
            owners = list(dict.fromkeys(absent.values()))
            raise BuildError(
                f"missing prerequisite: {', '.join(absent)} not found on the PATH "
                f"({os.environ.get('PATH', '')}), though the Debian package"
                f"{'s' * (len(owners) > 1)} {', '.join(owners)} "
                f"{'are' if len(owners) > 1 else 'is'} installed")


class Builder(Stages):
    """The cache directory and the stages that fill it."""

    def __init__(self, cache: Path) -> None:
        super().__init__(cache / "logs")
        self.cache = cache
        self.bin = cache / "bin"
        self.work = cache / "work"
        self.stamps = self.work / "stamps"  # one per finished stage, holding its versions
        self.apt_dir = self.work / "apt"
        self.tree = self.work / "kubernetes"
        self.goroot = self.work / "go" / "usr/lib/go-1.19"
        self.manifest_path = self.bin / "MANIFEST.json"
        self.manifest = self.read_manifest()
        self.apt_updated = False

    def read_manifest(self) -> dict[str, Any]:
        try:
            manifest: dict[str, Any] = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {"binaries": {}, "packages": {}}
        manifest.setdefault("binaries", {})
        manifest.setdefault("packages", {})
        return manifest

    def missing(self) -> list[str]:
        """The binaries absent from bin/, differing from the manifest's sha256, or built
        without a source fix they should have."""
        recorded = self.manifest["binaries"]
        return [name for name in BINARIES
                if not (self.bin / name).is_file() or name not in recorded
                or sha256(self.bin / name) != recorded[name].get("sha256")
                or recorded[name].get("fixes", []) != sorted(SOURCE_FIXES.get(name, {}))]

    # -- running steps --------------------------------------------------------------------

    def once(self, name: str, doing: str, step: Callable[[], dict[str, str]],
             output: Path) -> None:
        """Run a preparation stage unless an earlier run finished it and its `output` is
        still there; `step` returns the package versions it used, kept in its stamp for the
        manifest."""
        stamp = self.stamps / name
        if stamp.exists() and output.exists():
            return
        with self.stage(name, doing):
            versions = step()
        self.stamps.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(versions))
        self.write_manifest()

    def apt_get(self, stage: str, args: list[str], cwd: Path | None = None) -> None:
        """apt-get with the private configuration, its lists updated once per run."""
        env = {**os.environ, "APT_CONFIG": str(self.apt_dir / "apt.conf")}
        if not self.apt_updated:
            self.write_apt_config()
            self.run(stage, ["apt-get", "-q", "update"], env=env)
            self.apt_updated = True
        self.run(stage, ["apt-get", "-q", *args], cwd=cwd, env=env)

    def write_apt_config(self) -> None:
        uri, keyring = debian_mirror()
        etc, state, cache = self.apt_dir / "etc", self.apt_dir / "state", self.apt_dir / "cache"
        for d in ("sources.list.d", "apt.conf.d", "preferences.d"):
            (etc / d).mkdir(parents=True, exist_ok=True)
        for path in (state / "lists/partial", cache / "archives/partial"):
            path.mkdir(parents=True, exist_ok=True)
        (etc / "sources.list").write_text(
            f"deb [signed-by={keyring}] {uri} {SUITE} main\n"
            f"deb-src [signed-by={keyring}] {uri} {SUITE} main\n")
        config = self.apt_dir / "apt.conf"
        config.write_text("\n".join([
            f'Dir::Etc "{etc}";',
            f'Dir::State "{state}";',
            'Dir::State::status "/var/lib/dpkg/status";',  # read only, never written here
            f'Dir::Cache "{cache}";', ""]))
        # The machine's own Acquire settings (proxies, a snapshot mirror's expired Release
        # dates) carry over; nothing else of its configuration (hooks, sources) does.
        defaults = set(acquire_settings(str(config)))
        machine = [line for line in acquire_settings("") if line not in defaults]
        with config.open("a") as f:
            f.write("".join(f"{line}\n" for line in machine))

    def download(self, stage: str, packages: list[str], into: Path) -> dict[str, str]:
        """Download binary packages and unpack them (no install) into `into`; their versions."""
        debs = self.work / "debs" / stage
        shutil.rmtree(debs, ignore_errors=True)
        shutil.rmtree(into, ignore_errors=True)
        debs.mkdir(parents=True)
        self.apt_get(stage, ["download", *packages], cwd=debs)
        versions = {}
        for deb in sorted(debs.glob("*.deb")):
            self.run(stage, ["dpkg", "-x", str(deb), str(into)])
            versions[deb.name.split("_")[0]] = deb_version(deb)
        return versions

    # -- stages ---------------------------------------------------------------------------

    def prerequisites(self) -> None:
        self.install_missing(BUILD_PACKAGES, BUILD_COMMANDS)

    def fetch_source(self) -> dict[str, str]:
        download = self.work / "source"
        shutil.rmtree(download, ignore_errors=True)
        shutil.rmtree(self.tree, ignore_errors=True)
        download.mkdir(parents=True)
        self.apt_get("source", ["source", "--download-only", "kubernetes"], cwd=download)
        dsc = next(download.glob("kubernetes_*.dsc"), None)
        if dsc is None:
            raise BuildError(f"source: no kubernetes_*.dsc fetched; see {self.logs}/source.log")
        # Debian's patches adapt the build to Debian's packaging; the tests need none of them.
        self.run("source", ["dpkg-source", "-x", "--skip-patches", dsc.name, str(self.tree)],
                 cwd=download)
        version = re.search(r"^Version: (\S+)", dsc.read_text(), re.M)
        versions = {"kubernetes": version[1] if version else dsc.stem}
        # The reflect2 fix (see the module docstring): only the package's sources, as
        # `go mod vendor` would have copied them.
        reflect2 = self.work / "reflect2"
        versions |= self.download("source", [REFLECT2_PACKAGE], reflect2)
        fixed = reflect2 / "usr/share/gocode/src/github.com/modern-go/reflect2"
        vendored = self.tree / "vendor/github.com/modern-go/reflect2"
        shutil.rmtree(vendored, ignore_errors=True)
        vendored.mkdir()
        for source in sorted(fixed.iterdir()):
            if source.suffix in (".go", ".s") and not source.name.endswith("_test.go"):
                shutil.copy2(source, vendored / source.name)
        return versions

    def build_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GOROOT": str(self.goroot),
            "PATH": f"{self.goroot / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "GOFLAGS": "-mod=vendor",
            "GOPROXY": "off",
            "CGO_ENABLED": "0",
        }  # Kubernetes' scripts keep GOPATH and Go's build cache in the tree's _output/, and
        # take the version the binaries report from the source (hack/lib/version.sh), not git

    def apply_fixes(self, name: str) -> None:
        """The binary's SOURCE_FIXES, in the tree (once: a fixed file is left as it is)."""
        for fix, (relative, text, replacement) in SOURCE_FIXES.get(name, {}).items():
            path = self.tree / relative
            source = path.read_text()
            if replacement in source:
                continue
            if source.count(text) != 1:
                raise BuildError(f"{name}: the source fix {fix} does not apply to {path}")
            path.write_text(source.replace(text, replacement))

    def build_kube(self, name: str) -> None:
        with self.stage(name, f"building (log: {self.logs / name}.log)"):
            self.apply_fixes(name)
            self.run(name, ["nice", "-n", "19", "make", f"WHAT=cmd/{name}"],
                     cwd=self.tree, env=self.build_env())
            self.install(name, self.tree / "_output/bin" / name)

    def build_pause(self) -> None:
        with self.stage("pause", "compiling build/pause/linux/pause.c"):
            out = self.work / "pause"
            self.run("pause", ["nice", "-n", "19", "gcc", "-Os", "-static", "-o", str(out),
                               "build/pause/linux/pause.c"], cwd=self.tree)
            self.install("pause", out)

    def install(self, name: str, built: Path) -> None:
        """Copy a binary into bin/ (atomically) and record it in the manifest at once, so an
        interrupted run keeps what it finished."""
        if not built.is_file():
            raise BuildError(f"{name}: the build left no {built}; see {self.logs / name}.log")
        self.bin.mkdir(parents=True, exist_ok=True)
        partial = self.bin / f".{name}.partial"
        shutil.copyfile(built, partial)
        partial.chmod(0o755)
        partial.replace(self.bin / name)
        self.manifest["binaries"][name] = {"sha256": sha256(self.bin / name),
                                           "bytes": (self.bin / name).stat().st_size,
                                           "fixes": sorted(SOURCE_FIXES.get(name, {}))}
        self.write_manifest()

    def write_manifest(self) -> None:
        for stamp in self.stamps.glob("*"):
            self.manifest["packages"] |= json.loads(stamp.read_text())
        self.manifest.update(
            kubernetes=KUBE_VERSION, debian_suite=SUITE,
            built=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
        self.bin.mkdir(parents=True, exist_ok=True)
        partial = self.manifest_path.with_suffix(".partial")
        partial.write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")
        partial.replace(self.manifest_path)

    def build(self) -> None:
        started = time.monotonic()
        missing = self.missing()
        if not missing:
            say(f"cached: all {len(BINARIES)} binaries in {self.bin} match MANIFEST.json "
                f"(checked in {time.monotonic() - started:.1f} s)")
            return
        say(f"to build into {self.bin}: {' '.join(missing)}")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.prerequisites()
        if "etcd" in missing:
            etcd = self.work / "etcd/usr/bin/etcd"
            self.once("etcd", "downloading etcd-server",
                      lambda: self.download("etcd", ["etcd-server"], self.work / "etcd"), etcd)
            self.install("etcd", etcd)
        if set(missing) - {"etcd"}:
            self.once("source", "downloading and unpacking kubernetes' source package",
                      self.fetch_source, self.tree)
        if "pause" in missing:
            self.build_pause()
        if set(missing) & set(KUBE_BINARIES):
            self.once("go", "downloading Go 1.19",
                      lambda: self.download("go", list(GO_PACKAGES), self.work / "go"),
                      self.goroot / "bin/go")
            for name in KUBE_BINARIES:
                if name in missing:
                    self.build_kube(name)
        say(f"built {' '.join(missing)} in {time.monotonic() - started:.0f} s; "
            f"binaries in {self.bin}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.k8s.build", description=(
        "Build once, from Debian's packages, the binaries of the local Kubernetes "
        f"{KUBE_VERSION} test cluster."))
    parser.add_argument("--cache", type=Path, help="cache directory (default: "
                        f"$PAXOSKV_K8S_CACHE or {DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    cache: Path = args.cache or Path(os.environ.get("PAXOSKV_K8S_CACHE") or DEFAULT_CACHE)
    return command(lambda: Builder(cache.absolute()).build(),
                   "interrupted; a new run resumes where this one stopped")


def command(work: Callable[[], None], interrupted: str) -> int:
    """A command's exit status: its expected failures said in one line, no traceback."""
    try:
        work()
    except BuildError as e:
        say(f"error: {e}")
        return 1
    except PermissionError as e:
        say(f"error: {e.filename}: permission denied (run as root or choose another --cache)")
        return 1
    except OSError as e:
        say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        say(interrupted)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
