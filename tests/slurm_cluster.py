"""A throwaway single-node SLURM cluster for tests (no pytest in here).

Usage::

    ok, why = SlurmCluster.available()
    if not ok:
        ...skip(why)
    cluster = SlurmCluster(tmp_path / "slurm").start()
    try:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env(), check=True)
    finally:
        cluster.stop()

Everything (config, state, spool, logs, two fake GPU device files, wrapper scripts) lives
in the given directory; the daemons run in the foreground (-D) as children of this process,
in their own sessions, on free ports, so several clusters can coexist; stop() ends them by
PID, and they outlive this process if stop() is never called. munged is the system one
(socket /run/munge): reused when it already answers, otherwise started here (as the munge
user) and stopped again by stop().
Needs root and Debian's ``slurm-wlm`` and ``munge`` packages (Slurm 22.05 on Debian 12).
No accounting daemon: ``sacct``/``sacctmgr`` fail on this cluster ("accounting storage is
disabled"), ``squeue`` works (MinJobAge=600, so finished jobs stay visible to it for 10
minutes); snakemake needs ``--slurm-status-command squeue`` (set in profiles/slurm).
available() checks binaries, root and munge statically; start() raises SlurmClusterError
(with the daemon's log tail) when a daemon cannot start, so callers can skip on either.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
import uuid
from pathlib import Path

SLURM_BINARIES = (
    "slurmctld",
    "slurmd",
    "slurmstepd",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)
CLIENT_COMMANDS = (
    "srun",
    "sbatch",
    "squeue",
    "scancel",
    "sinfo",
    "scontrol",
    "sacct",
    "salloc",
    "sattach",
    "sstat",
)
MUNGE_BINARIES = ("munged", "munge", "unmunge")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET_DIR = Path("/run/munge")


def _which(name: str, exclude: Path | None = None) -> str | None:
    """shutil.which on PATH plus the sbin directories, skipping ``exclude`` (our wrappers)."""
    extra = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    dirs = f"{os.environ.get('PATH', '')}{os.pathsep}{extra}".split(os.pathsep)
    if exclude is not None:
        dirs = [d for d in dirs if d and Path(d).resolve() != exclude.resolve()]
    return shutil.which(name, path=os.pathsep.join(d for d in dirs if d))


class SlurmClusterError(RuntimeError):
    """The cluster could not be brought up (the message says why; tests may skip on it)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def munge_works() -> bool:
    """True if a munged answers on the default socket (``munge -n | unmunge``)."""
    munge, unmunge = _which("munge"), _which("unmunge")
    if not munge or not unmunge:
        return False
    try:
        cred = subprocess.run([munge, "-n"], capture_output=True, timeout=10)
        if cred.returncode != 0:
            return False
        check = subprocess.run([unmunge], input=cred.stdout, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return check.returncode == 0


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class SlurmCluster:
    """A single-node SLURM cluster (slurmctld + slurmd, 2 fake GPUs) living in ``workdir``."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        gpus: int = 2,
        partition: str = "debug",
        start_timeout: float = 60.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.gpus = gpus
        self.partition = partition
        self.start_timeout = start_timeout
        self.host = socket.gethostname().split(".")[0]
        self.cluster_name = "t" + uuid.uuid4().hex[:8]  # ClusterName: lowercase, short
        self.conf = self.workdir / "slurm.conf"
        self.log_dir = self.workdir / "log"
        self.ctld_port: int | None = None
        self.slurmd_port: int | None = None
        self._procs: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ checks
    @staticmethod
    def available() -> tuple[bool, str]:
        """(True, "") if this machine can run the cluster, else (False, why)."""
        missing = [b for b in SLURM_BINARIES + MUNGE_BINARIES if _which(b) is None]
        if missing:
            return False, ("missing binaries: " + ", ".join(missing) + " (apt-get install slurm-wlm munge)")
        if os.geteuid() != 0:
            return False, "needs root (slurmd runs jobs as their user; SlurmUser=root here)"
        try:
            pwd.getpwnam("munge")
        except KeyError:
            return False, "no 'munge' user (is the munge package installed?)"
        if not munge_works() and not MUNGE_KEY.exists() and _which("mungekey") is None:
            return False, f"munged not running, {MUNGE_KEY} missing and no mungekey to create it"
        return True, ""

    # ----------------------------------------------------------------- config
    def _node_hardware(self) -> tuple[int, int]:
        """CPUs and RealMemory (MB) as ``slurmd -C`` sees them."""
        out = subprocess.run([_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, timeout=30)
        fields = dict(tok.split("=", 1) for tok in out.stdout.split() if "=" in tok)
        try:
            return int(fields["CPUs"]), int(fields["RealMemory"])
        except (KeyError, ValueError) as err:
            raise SlurmClusterError(f"cannot parse `slurmd -C`: {out.stdout!r} {out.stderr!r}") from err

    def _make_fake_gpu(self, index: int) -> Path:
        """An empty device file for gres.conf's File=.

        slurmd rejects plain files ("not a valid character or block device"), so make a
        character device with /dev/null's numbers (reads empty, writes discarded), or a
        symlink to /dev/null where mknod is not allowed.
        """
        dev = self.workdir / "dev" / f"fakegpu{index}"
        if dev.is_symlink() or dev.exists():
            dev.unlink()
        try:
            os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except OSError:
            dev.symlink_to("/dev/null")
        return dev

    def write_config(self) -> Path:
        """Write slurm.conf, gres.conf and the fake GPU device files; return slurm.conf."""
        for sub in ("state", "spool"):  # a fresh cluster: no saved jobs, no other ClusterName
            shutil.rmtree(self.workdir / sub, ignore_errors=True)
        for sub in ("state", "spool", "log", "dev"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        cpus, mem = self._node_hardware()
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        devices = [str(self._make_fake_gpu(i)) for i in range(self.gpus)]
        w = self.workdir
        conf = f"""\
# written by tests/slurm_cluster.py: throwaway single-node cluster, no accounting
ClusterName={self.cluster_name}
SlurmctldHost={self.host}
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/slurmctld.pid
SlurmdPidFile={w}/slurmd.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={w}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={max(100, min(1024, mem // max(cpus, 1)))}
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MaxArraySize=10001
MaxJobCount=100000
MinJobAge=600
SlurmctldTimeout=300
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
Waittime=0
MessageTimeout=30
NodeName={self.host} CPUs={cpus} RealMemory={mem} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP \
OverSubscribe=NO
"""
        self.conf.write_text(conf)
        (w / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File={','.join(devices)}\n")
        (w / "plugstack.conf").write_text("")
        self._write_wrappers()
        return self.conf

    def _write_wrappers(self) -> None:
        """bin/ with srun, sbatch, ... that default SLURM_CONF to this cluster's slurm.conf.

        The jobstep executor of snakemake-executor-plugin-slurm runs `srun` with every
        SLURM_* variable removed, SLURM_CONF included (plugin issue #164), and the SLURM
        executor itself drops them when started inside a job; a real cluster then finds
        /etc/slurm/slurm.conf, this one would find nothing. env() puts bin/ first on PATH.
        """
        bindir = self.workdir / "bin"
        bindir.mkdir(exist_ok=True)
        for name in CLIENT_COMMANDS:
            real = _which(name, exclude=bindir)
            if real is None:
                continue
            wrapper = bindir / name
            wrapper.write_text(f'#!/bin/sh\nSLURM_CONF="${{SLURM_CONF:-{self.conf}}}" exec {real} "$@"\n')
            wrapper.chmod(0o755)

    # ------------------------------------------------------------------ munge
    def _ensure_munge(self) -> None:
        if munge_works():
            return
        munge_user = pwd.getpwnam("munge")
        if not MUNGE_KEY.exists():
            MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
            if _which("mungekey"):
                subprocess.run(
                    [_which("mungekey"), "--create", "--keyfile", str(MUNGE_KEY)],
                    check=True,
                    capture_output=True,
                )
            else:
                MUNGE_KEY.write_bytes(os.urandom(1024))
        os.chown(MUNGE_KEY.parent, munge_user.pw_uid, munge_user.pw_gid)
        os.chmod(MUNGE_KEY.parent, 0o700)
        os.chown(MUNGE_KEY, munge_user.pw_uid, munge_user.pw_gid)
        os.chmod(MUNGE_KEY, 0o400)
        for d in (MUNGE_SOCKET_DIR, Path("/var/log/munge"), Path("/var/lib/munge")):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, munge_user.pw_uid, munge_user.pw_gid)
        os.chmod(MUNGE_SOCKET_DIR, 0o755)
        log = open(self.log_dir / "munged.out", "ab")  # noqa: SIM115 (kept with the process)
        proc = subprocess.Popen(
            [_which("munged"), "--foreground", "--force"],
            user=munge_user.pw_uid,
            group=munge_user.pw_gid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
        )
        log.close()
        self._procs["munged"] = proc
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if munge_works():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SlurmClusterError(
            "munged did not come up:\n"
            + _tail(self.log_dir / "munged.out")
            + "\n"
            + _tail(Path("/var/log/munge/munged.log"))
        )

    # ---------------------------------------------------------------- daemons
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.out", "ab")  # noqa: SIM115
        self._procs[name] = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
            cwd=self.workdir,
        )
        log.close()

    def start(self) -> SlurmCluster:
        """Bring the cluster up and wait until the node is idle; idempotent."""
        if self.running():
            return self
        ok, why = self.available()
        if not ok:
            raise SlurmClusterError(why)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.write_config()
            self._ensure_munge()
            # -D: foreground (its PID is ours), -c: ignore any saved state, -i: ignore bad state
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)])
            self._wait(self._ctld_up, "slurmctld to answer", "slurmctld")
            self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf)])
            self._wait(self._node_idle, f"node {self.host} to become idle", "slurmd")
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self, ready, what: str, proc_name: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            proc = self._procs.get(proc_name)
            if proc is not None and proc.poll() is not None:
                raise SlurmClusterError(
                    f"{proc_name} exited with {proc.returncode} while waiting for {what}:\n"
                    + _tail(self.log_dir / f"{proc_name}.out")
                    + "\n"
                    + _tail(self.log_dir / f"{proc_name}.log")
                )
            if ready():
                return
            time.sleep(0.5)
        raise SlurmClusterError(
            f"timed out after {self.start_timeout:.0f}s waiting for {what}:\n"
            + _tail(self.log_dir / f"{proc_name}.log")
            + "\n"
            + self._node_info()
        )

    def _run(self, argv: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
        try:
            argv = [_which(argv[0]) or argv[0], *argv[1:]]
            return subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", "timeout")

    def _ctld_up(self) -> bool:
        return self._run(["scontrol", "ping"]).stdout.count("UP") > 0

    def _node_idle(self) -> bool:
        out = self._run(["sinfo", "-h", "-N", "-n", self.host, "-o", "%T"]).stdout.strip()
        return out.rstrip("*~#!%$@^-") == "idle"

    def _node_info(self) -> str:
        return self._run(["scontrol", "show", "node", self.host]).stdout

    def running(self) -> bool:
        return all(n in self._procs and self._procs[n].poll() is None for n in ("slurmctld", "slurmd"))

    # -------------------------------------------------------------- interface
    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for sbatch/squeue/srun/snakemake pointing at this cluster."""
        env = dict(os.environ if base is None else base)
        for key in list(env):  # don't leak an enclosing job's context into ours
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_")):
                del env[key]
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.workdir / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    def pids(self) -> dict[str, int]:
        """PIDs of the daemons this instance started (munged only if it started it)."""
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    def stop(self, *, keep_munge: bool = False, timeout: float = 15.0) -> None:
        """Cancel this cluster's jobs, then stop the daemons this instance started, by PID.

        munged is stopped only if this instance started it; pass keep_munge=True when other
        clusters still rely on it.
        """
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            self._run(["scancel", "--full", "-u", pwd.getpwuid(os.getuid()).pw_name])
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                q = self._run(["squeue", "-h", "-t", "PD,R,CG,S,CF", "-o", "%i"])
                if q.returncode != 0 or not q.stdout.strip():
                    break
                time.sleep(0.5)
        order = ["slurmd", "slurmctld"] + ([] if keep_munge else ["munged"])
        for name in order:
            proc = self._procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            del self._procs[name]
        self._kill_orphan_stepds()

    def _kill_orphan_stepds(self) -> None:
        """slurmstepd double-forks away from slurmd; kill those left in our slurmd's cwd."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
                if not cmd.startswith(b"slurmstepd"):
                    continue
                if Path(os.readlink(entry / "cwd")) != self.workdir:
                    continue
                os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"SlurmCluster({str(self.workdir)!r}, name={self.cluster_name}, "
            f"ports={self.ctld_port}/{self.slurmd_port}, running={self.running()})"
        )
