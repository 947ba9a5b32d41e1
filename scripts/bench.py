#!/usr/bin/env python3
"""Benchmarks of the protective block, each against a baseline measured in the same run.

  python3 scripts/bench.py [--runs N] [--skip-external]

1. `git push` of one commit to a bare repository with pushgate installed (pre-receive: validation,
   topology, the durable reservation; post-receive: the job), against the same push to a
   repository whose pre-receive hook does nothing (`exit 0`), and to one with pushgate's
   pre-receive only. Interleaved, median of N. The hooks' own timings (PUSHGATE_TIMINGS=1) give
   the queue's share of the push.
2. A push of 1,000 branches (1,000 distinct commits, same configuration) the same way.
3. The hook on hostile configurations: wall time and peak memory of `pushgate-hook pre-receive`
   run against the real object store.
4. `check-jsonschema` + `yamllint` on the same three files (what an admin would otherwise wire
   into a hook) against `pushgate-hook check`.
Nothing here asserts a time; it prints figures. Needs git, cargo, python3 (pip for step 4).
"""
import argparse
import atexit
import json
import re
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "real"
SAMPLE = CORPUS / "magento__magento-cloud__branch-2.4.8"
HOOK = ROOT / "target" / "release" / "pushgate-hook"
ZERO = "0" * 40
ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b",
           GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")


def run(args, cwd=None, check=True, env_extra=None, **kw):
    env = dict(ENV, **(env_extra or {}))
    return subprocess.run(args, cwd=cwd, env=env, check=check, capture_output=True, **kw)


def git(cwd, *args, **kw):
    return run(["git", *args], cwd=cwd, **kw)


def bare_with_pushgate(path, data):
    run(["bash", str(ROOT / "install.sh"), "--prefix", str(data / "prefix"), "--data", str(data / "data"),
         "--bin-dir", str(HOOK.parent), str(path)])


def bare_with_noop(path):
    git(None, "init", "-q", "--bare", str(path))
    hook = path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)


def install_at(tmp, repo, data, *extra):
    """install.sh on `repo` with its data directory `data` (the binaries of this build)."""
    run(["bash", str(ROOT / "install.sh"), "--prefix", str(tmp / "prefix"), "--data", str(data),
         "--bin-dir", str(HOOK.parent), *extra, str(repo)])


def example_work(work):
    """A work tree of examples/magento with one commit on main."""
    shutil.copytree(ROOT / "examples" / "magento", work)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")


def push_cmd(repo, refspec, quiet=True):
    """`git push`; to pushgate's repositories with -o pushgate.nowait: the protective block
    alone, not the deployment the push would otherwise follow."""
    cmd = ["git", "push"] + (["-q"] if quiet else [])
    if (repo / "hooks" / "post-receive").exists() or (repo / "hooks" / "pre-receive").is_symlink():
        cmd += ["-o", "pushgate.nowait"]
    return cmd + [str(repo), refspec]


def timed(args, cwd):
    start = time.perf_counter()
    out = run(args, cwd=cwd, check=False)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{out.stdout.decode()}{out.stderr.decode()}")
    return elapsed


def work_tree(tmp):
    work = tmp / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    shutil.copytree(SAMPLE, work, dirs_exist_ok=True)
    for p in work.rglob("*"):
        if p.is_file():
            p.chmod(0o644)
    for i in range(200):  # some application code beside the configuration
        f = work / "app" / "code" / f"Module{i % 20}" / f"File{i}.php"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"<?php // file {i}\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    return work


def single_ref(tmp, work, runs):
    pg, pre, noop = tmp / "pg.git", tmp / "pre.git", tmp / "noop.git"
    bare_with_pushgate(pg, tmp)
    bare_with_pushgate(pre, tmp)
    (pre / "hooks" / "post-receive").unlink()
    bare_with_noop(noop)
    repos = {"pushgate": pg, "pre-receive only": pre, "noop": noop}
    for repo in repos.values():  # the first push carries the objects; not timed
        run(push_cmd(repo, "HEAD:refs/heads/main"), cwd=work)
    times = {name: [] for name in repos}
    for i in range(runs):
        (work / "app" / "code" / "change.php").write_text(f"<?php // change {i}\n")
        git(work, "commit", "-q", "-am", f"change {i}") if i else (git(work, "add", "-A"), git(work, "commit", "-q", "-m", "c"))
        order = list(repos.items()) if i % 2 == 0 else list(reversed(repos.items()))
        for name, repo in order:
            times[name].append(timed(push_cmd(repo, "HEAD:refs/heads/main"), work))
    # The hooks' own account of one more push each: total, and the queue's part.
    shares = []
    for i in range(min(runs, 21)):
        (work / "app" / "code" / "change.php").write_text(f"<?php // timed {i}\n")
        git(work, "commit", "-q", "-am", f"timed {i}")
        out = run(push_cmd(pg, "HEAD:refs/heads/main", quiet=False), cwd=work, env_extra={"PUSHGATE_TIMINGS": "1"})
        text = (out.stdout + out.stderr).decode()
        pre_ms = re.search(r"pre-receive ([0-9.]+) ms, of which queue ([0-9.]+) ms", text)
        post_ms = re.search(r"post-receive ([0-9.]+) ms", text)
        if pre_ms and post_ms:
            shares.append((float(pre_ms.group(1)), float(pre_ms.group(2)), float(post_ms.group(1))))
    return times, shares


def many_branches(tmp, work, branches, runs):
    """1,000 distinct commits on 1,000 branches, pushed at once to fresh repositories."""
    head = git(work, "rev-parse", "HEAD").stdout.decode().strip()
    stream = []
    for i in range(branches):
        content = f"<?php // branch {i}\n"
        stream.append(f"commit refs/heads/b{i:04d}\nmark :{i + 1}\ncommitter b <b@b> 0 +0000\ndata 2\nb\n"
                      f"from {head}\nM 100644 inline app/code/branch.php\ndata {len(content)}\n{content}\n")
    run(["git", "fast-import", "--quiet"], cwd=work, input="".join(stream).encode())
    times = {"pushgate": [], "noop": []}
    for r in range(runs):
        pg, noop = tmp / f"many-pg-{r}.git", tmp / f"many-noop-{r}.git"
        bare_with_pushgate(pg, tmp)
        bare_with_noop(noop)
        for repo in (pg, noop):  # objects of the base first, so both pushes carry the same
            run(push_cmd(repo, "main:refs/heads/main"), cwd=work)
        order = [("pushgate", pg), ("noop", noop)] if r % 2 == 0 else [("noop", noop), ("pushgate", pg)]
        for name, repo in order:
            times[name].append(timed(push_cmd(repo, "refs/heads/b*:refs/heads/b*"), work))
    return times


def runner_benchmarks(tmp, runs):
    """Redeploy of an unchanged tree (slug reuse), push to `current` switched; claim latency;
    slug packing against tar | zstd -3."""
    runner = ROOT / "target" / "release" / "pushgate-runner"
    repo, data = tmp / "deploy.git", tmp / "deploy-data"
    install_at(tmp, repo, data)
    run(["git", "--git-dir", str(repo), "config", "pushgate.pickupWaitMs", "30000"])
    work = tmp / "deploy-work"
    example_work(work)
    # The runner's own log goes to a file beside its data, not into the figures.
    serving = subprocess.Popen([str(runner), "serve", "--data", str(data)], env=ENV, stdout=subprocess.DEVNULL,
                               stderr=open(tmp / "runner.log", "wb"))
    try:
        for _ in range(100):
            if (data / "wakeup").exists():
                break
            time.sleep(0.05)
        run(["git", "push", str(repo), "HEAD:refs/heads/main"], cwd=work)  # first deployment: builds
        redeploys = []
        for i in range(runs):
            git(work, "commit", "-q", "--allow-empty", "-m", f"redeploy {i}")  # same tree
            redeploys.append(timed(["git", "push", "-q", str(repo), "HEAD:refs/heads/main"], work))
        jobs = json.loads(run([str(runner), "jobs", "--json", "--data", str(data)]).stdout)
    finally:
        serving.terminate()
        serving.wait()
    def at(ts):
        from datetime import datetime
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
    latencies = [at(j["started_at"]) - at(j["created_at"]) for j in jobs if j.get("started_at")]
    reused = sum(1 for j in jobs if "Reusing existing build" in run([str(runner), "logs", str(j["id"]), "--data", str(data)]).stdout.decode())

    # Packing: a tree of ~40 MB of mixed files, like a built Magento app.
    tree = tmp / "pack-tree"
    for i in range(4000):
        f = tree / f"vendor/module{i % 40}/src/File{i}.php"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text((f"<?php\n// file {i}\nclass C{i} {{ public function f() {{ return {i}; }} }}\n") * 120)
    for i in range(40):
        (tree / f"pub/static/img{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (tree / f"pub/static/img{i}.bin").write_bytes(os.urandom(200_000))
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    ours, theirs = [], []
    for i in range(5):
        start = time.perf_counter()
        run([str(runner), "pack", str(tree), str(tmp / f"slug{i}.tar.zst")])
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        run(["bash", "-c", f"tar -C {tree} -cf - . | zstd -3 -q -o {tmp / f'tar{i}.tar.zst'}"])
        theirs.append(time.perf_counter() - start)
    return redeploys, latencies, reused, size, ours, theirs


def router_benchmarks(tmp, runs):
    """Push to a new release answering at its URL (unchanged tree), with the router against
    without it; requests per second through pushgate's router (nginx and PHP-FPM it
    configured) against nginx and PHP-FPM configured by hand the same way, interleaved."""
    runner = ROOT / "target" / "release" / "pushgate-runner"
    os.chmod(tmp, 0o755)  # a runner started as root runs hooks and apps as the project's user
    fpm = sorted(Path("/usr/sbin").glob("php-fpm*"))
    if not fpm or not shutil.which("nginx") or not shutil.which("wrk"):
        sys.exit("the router benchmark needs nginx, php-fpm and wrk (apt-get install nginx php-fpm wrk)")
    fpm = str(fpm[-1])

    def free_port():
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def setup(name, router):
        repo, data = tmp / f"{name}.git", tmp / f"{name}-data"
        install_at(tmp, repo, data)
        run(["git", "--git-dir", str(repo), "config", "pushgate.pickupWaitMs", "30000"])
        data.mkdir(parents=True, exist_ok=True)
        (data / "runtimes.json").write_text(json.dumps({"php:8.4": {"php_fpm": fpm}}))
        args = [str(runner), "serve", "--data", str(data)]
        port = None
        if router:
            port = free_port()
            args += ["--router", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "wb"))
        for _ in range(200):
            if (data / "wakeup").exists() and (not router or (data / "router/run/nginx.pid").exists()):
                break
            time.sleep(0.05)
        return repo, data, port, proc

    work = tmp / "router-work"
    shutil.copytree(ROOT / "examples" / "magento", work)
    (work / "pub").mkdir(exist_ok=True)
    (work / "pub" / "hello.txt").write_text("hello\n" * 200)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    routed = setup("routed", True)
    plain = setup("plain", False)
    hand_dir = tmp / "hand"
    try:
        for repo, *_ in (routed, plain):
            run(["git", "push", str(repo), "HEAD:refs/heads/main"], cwd=work)
        host = "main.routed.localhost"
        url = f"http://127.0.0.1:{routed[2]}/"
        import urllib.request

        def answers(body):
            req = urllib.request.Request(url, headers={"Host": host})
            try:
                return body in urllib.request.urlopen(req, timeout=5).read().decode()
            except OSError:
                return False

        with_router, without = [], []
        for i in range(runs):
            git(work, "commit", "-q", "--allow-empty", "-m", f"redeploy {i}")
            for repo, _, port, _ in ((plain[0], None, None, None), (routed[0], None, routed[2], None)):
                start = time.perf_counter()
                run(["git", "push", "-q", str(repo), "HEAD:refs/heads/main"], cwd=work)
                if port:
                    deadline = time.perf_counter() + 30
                    while not answers("Hello from pushgate"):
                        if time.perf_counter() > deadline:
                            sys.exit(f"the site does not answer at {url} (see {tmp}/routed.log)")
                        time.sleep(0.001)
                    with_router.append(time.perf_counter() - start)
                else:
                    without.append(time.perf_counter() - start)

        # The same site configured by hand: nginx and a PHP-FPM pool, root through `current`.
        env_dir = next((routed[1] / "environments").glob("routed-*")) / "main"
        hand_port = free_port()
        for d in ("run", "logs"):
            (hand_dir / d).mkdir(parents=True, exist_ok=True)
        os.chmod(hand_dir, 0o755)
        user = "pushgate-web" if os.geteuid() == 0 else None
        # The same runtime variables as pushgate's pool (an admin doing it by hand passes them too).
        ours_pool = next((routed[1] / "router" / "php").rglob("*.conf")).read_text()
        variables = "".join(l + "\n" for l in ours_pool.splitlines() if l.startswith("env["))
        (hand_dir / "php.conf").write_text(
            f"[global]\npid = {hand_dir}/run/php.pid\nerror_log = {hand_dir}/logs/php.log\n"
            f"[www]\n" + (f"user = {user}\ngroup = {user}\nlisten.owner = {user}\nlisten.group = {user}\n" if user else "") +
            f"listen = {hand_dir}/run/php.sock\nlisten.mode = 0660\npm = dynamic\npm.max_children = 8\n"
            "pm.start_servers = 2\npm.min_spare_servers = 1\npm.max_spare_servers = 3\nclear_env = yes\n" + variables)
        pub = env_dir / "current" / "mymagento" / "pub"
        (hand_dir / "nginx.conf").write_text(
            (f"user {user};\n" if user else "") +
            f"worker_processes auto;\npid {hand_dir}/run/nginx.pid;\nevents {{ worker_connections 1024; }}\n"
            "http { include /etc/nginx/mime.types; access_log off; sendfile on;\n"
            f"  client_body_temp_path {hand_dir}/run/b; proxy_temp_path {hand_dir}/run/p; fastcgi_temp_path {hand_dir}/run/f;\n"
            f"  uwsgi_temp_path {hand_dir}/run/u; scgi_temp_path {hand_dir}/run/s;\n"
            f"  server {{ listen 127.0.0.1:{hand_port}; server_name {host}; root {pub};\n"
            f"    if (-f {env_dir}/maintenance) {{ return 503; }}\n"
            "    location / { try_files $uri /index.php$is_args$args; }\n"
            "    location ~ \\.php$ { try_files $uri =404; include /etc/nginx/fastcgi_params;\n"
            "      fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name; fastcgi_param DOCUMENT_ROOT $realpath_root;\n"
            f"      fastcgi_pass unix:{hand_dir}/run/php.sock; }}\n  }}\n}}\n")
        run([fpm, "-y", str(hand_dir / "php.conf")])
        run(["nginx", "-p", str(hand_dir), "-e", str(hand_dir / "logs/error.log"), "-c", str(hand_dir / "nginx.conf")])
        time.sleep(0.5)

        def rps(port, path):
            out = run(["wrk", "-t2", "-c32", "-d4s", "-H", f"Host: {host}", f"http://127.0.0.1:{port}{path}"]).stdout.decode()
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            if bad:
                sys.exit(f"wrk saw {bad.group(1)} errors on {path}:\n{out}")
            return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

        figures = {}
        for path in ("/hello.txt", "/"):
            ours, hand = [], []
            for i in range(4):  # interleaved, each going first in turn
                for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                    (ours if which == 0 else hand).append(rps(routed[2] if which == 0 else hand_port, path))
            figures[path] = (statistics.median(ours), statistics.median(hand))
    finally:
        for pid_file in (list(hand_dir.glob("run/*.pid")) + list((routed[1] / "router" / "run").glob("*.pid"))
                         + list((routed[1] / "router" / "pools").glob("*/php.pid"))):
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (OSError, ValueError):
                pass
        for proc in (routed[3], plain[3]):
            proc.terminate()
            proc.wait()
    return with_router, without, figures



def clone_benchmark(tmp, megabytes, rounds):
    """Copying a MariaDB database to another environment (`env sync --services`: the runner's
    job, emptying the copy and loading the parent's) against `mariadb-dump | mariadb` of the
    same database by hand, interleaved."""
    runner = ROOT / "target" / "release" / "pushgate-runner"
    os.chmod(tmp, 0o755)
    repo, data = tmp / "clone.git", tmp / "clone-data"
    install_at(tmp, repo, data)
    run([str(runner), "backend", "add", "mysql", "mysql://root@127.0.0.1:3306", "--data", str(data)])
    work = tmp / "clone-work"
    shutil.copytree(ROOT / "examples" / "magento", work)
    app = (work / ".magento.app.yaml").read_text().replace("    redis: \"redis:redis\"\n", "")
    (work / ".magento.app.yaml").write_text(app)
    (work / ".magento" / "services.yaml").write_text("mysql:\n    type: mysql:11.4\n    disk: 20480\n")
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    sql = lambda db, q: run(["mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-N", db, "-e", q]).stdout.decode().strip()
    try:
        for branch in ("main", "feature"):
            run(["git", "push", "-q", "-o", "pushgate.nowait", str(repo), f"HEAD:refs/heads/{branch}"], cwd=work)
            run([str(runner), "serve", "--until-idle", "--data", str(data)])
        services = {p.name.split(".")[-2]: json.loads(p.read_text())["services"]["mysql"] for p in (data / "services").glob("*.json")}
        main_db = services["main"]["path"]
        sql(main_db, "CREATE TABLE big (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(1000)) ENGINE=InnoDB")
        sql(main_db, "INSERT INTO big (v) VALUES (REPEAT(MD5(RAND()), 31))")
        while int(sql("information_schema", f"SELECT COALESCE(SUM(data_length), 0) FROM tables WHERE table_schema = '{main_db}'")) < megabytes * 1e6:
            sql(main_db, "INSERT INTO big (v) SELECT REPEAT(MD5(RAND()), 31) FROM big")
        size = int(sql("information_schema", f"SELECT SUM(data_length + index_length) FROM tables WHERE table_schema = '{main_db}'"))
        rows = sql(main_db, "SELECT count(*) FROM big")
        ours, theirs = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            run([str(runner), "env", "sync", "feature", "--services", "--data", str(data)])
            run([str(runner), "serve", "--until-idle", "--data", str(data)])
            ours.append(time.perf_counter() - start)
            assert sql(services["feature"]["path"], "SELECT count(*) FROM big") == rows
            sql("mysql", "DROP DATABASE IF EXISTS pushgate_bench_copy")
            sql("mysql", "CREATE DATABASE pushgate_bench_copy")
            start = time.perf_counter()
            run(["bash", "-c", f"mariadb-dump --protocol=tcp -h 127.0.0.1 -u root --single-transaction {main_db} "
                               f"| mariadb --protocol=tcp -h 127.0.0.1 -u root pushgate_bench_copy"])
            theirs.append(time.perf_counter() - start)
    finally:
        run([str(runner), "env", "delete", "feature", "--yes", "--data", str(data)], check=False)
        run([str(runner), "env", "delete", "main", "--yes", "--data", str(data)], check=False)
        sql("mysql", "DROP DATABASE IF EXISTS pushgate_bench_copy")
    return size, int(rows), ours, theirs



def hostile_inputs():
    """Each hostile push as the files it writes over the sample project."""
    laughs = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 10):
        p, c = chr(ord("a") + i - 1), chr(ord("a") + i)
        laughs += f"{c}: &{c} [" + ",".join([f"*{p}"] * 9) + "]\n"
    quadratic = "big: &big [" + ",".join(["x"] * 5000) + "]\nrefs: [" + ",".join(["*big"] * 5000) + "]\n"
    binary = bytes((i * 2654435761 >> 13) & 0xFF for i in range(4096))
    services = ".magento/services.yaml"
    cases = [
        ("billion laughs", {services: laughs.encode()}),
        ("quadratic alias bomb", {services: quadratic.encode()}),
        ("20,000-deep block nesting", {services: ("- " * 20000 + "x\n").encode()}),
        ("20,000-deep flow nesting", {services: ("[" * 20000 + "]" * 20000 + "\n").encode()}),
        ("50 MB blob", {services: b"a: b\n" * (50 * 1024 * 1024 // 5)}),
        ("binary blob", {services: binary[:10] + b"\0" + binary[11:]}),
    ]
    # "Did you mean" on long names: a 100,000-character target against 100 names of 1,000
    # characters, and a 1 MB target against 900 of them.
    for target, names in ((100_000, 100), (1_000_000, 900)):
        svc = "".join(f"s{i:03}{'a' * 996}:\n    type: mysql:11.4\n    disk: 512\n" for i in range(names))
        app = (SAMPLE / ".magento.app.yaml").read_text()
        app = re.sub(r"(?m)^relationships:\n", f"relationships:\n    long: \"{'x' * target}:mysql\"\n", app, count=1)
        cases.append((f"{target // 1000} KB name vs {names} names", {services: svc.encode(),
                                                                    ".magento.app.yaml": app.encode()}))
    # `!include` fan-out: 64 string includes of one 1 MiB file in each of 24 apps.
    big = b"x" * ((1 << 20) - 1) + b"\n"
    includes = "".join(f"        V{i}: !include {{type: string, path: ../big.txt}}\n" for i in range(64))
    fan = {"big.txt": big}
    for a in range(24):
        fan[f"app{a}/.magento.app.yaml"] = (f"name: app{a}\ntype: php:8.4\ndisk: 1024\n"
                                            f"variables:\n    env:\n{includes}").encode()
    cases.append(("!include fan-out, 24 apps", fan))
    return cases


def hostile(tmp, work):
    """Each hostile push: `pushgate-hook pre-receive` on the real object store, and `check` on
    the checkout; wall time and peak RSS of each."""
    store = tmp / "store.git"
    git(None, "init", "-q", "--bare", str(store))
    base = git(work, "rev-parse", "HEAD").stdout.decode().strip()
    rows = []

    def measured(args, **kw):
        start = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", *args], capture_output=True, **kw)
        elapsed = time.perf_counter() - start
        text = out.stdout.decode(errors="replace")
        first = next((l.strip() for l in text.splitlines() if l.strip().startswith(("- ", "E: B"))), "?")
        return elapsed, int(out.stderr.decode().strip().splitlines()[-1]), out.returncode, first

    for name, files in hostile_inputs():
        git(work, "checkout", "-q", "-B", "hostile", base)
        for path, content in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(content)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", name)
        git(work, "push", "-q", "-f", str(store), "HEAD:refs/heads/hostile")
        sha = git(work, "rev-parse", "HEAD").stdout.decode().strip()
        size = sum(len(c) for c in files.values())
        pre = measured([str(HOOK), "pre-receive"], env=dict(ENV, GIT_DIR=str(store)),
                       input=f"{ZERO} {sha} refs/heads/main\n".encode())
        check = measured([str(HOOK), "check", str(work)], env=ENV)
        rows.append((name, size, pre, check))
    # The push-wide budget: 200 branches, each a distinct configuration that expands to almost
    # what one commit may (an anchor of 200 KB used 19 times: 4 MB of text from 200 KB).
    git(work, "checkout", "-q", "-B", "hostile", base)
    updates = []
    for b in range(200):
        (work / ".magento" / "services.yaml").write_text(
            f"# branch {b}\nmysql:\n    type: mysql:11.4\n    disk: 2048\n"
            f"x-heavy: &h \"{'y' * 200_000}\"\nx-many: [{', '.join(['*h'] * 19)}]\n")
        git(work, "commit", "-q", "-am", f"heavy {b}")
        sha = git(work, "rev-parse", "HEAD").stdout.decode().strip()
        git(work, "update-ref", f"refs/heads/heavy{b}", sha)
        updates.append(f"{ZERO} {sha} refs/heads/heavy{b}\n")
    git(work, "push", "-q", "-f", str(store), "refs/heads/heavy*:refs/heads/heavy*")
    pre = measured([str(HOOK), "pre-receive"], env=dict(ENV, GIT_DIR=str(store)), input="".join(updates).encode())
    rows.append(("200 heavy distinct branches", 200 * 200_000, pre, (0.0, 0, 0, "")))
    git(work, "checkout", "-q", "-f", "main")
    git(work, "clean", "-q", "-fdx")
    git(work, "branch", "-q", "-D", "hostile", *[f"heavy{b}" for b in range(200)])
    return rows


def fsck_cost(tmp, runs):
    """What `receive.fsckObjects` (turned on by install.sh) costs a push: the first push of a
    project of 10,000 files, and then a push of one changed file, with it on and off."""
    work = tmp / "fsck-work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    shutil.copytree(SAMPLE, work, dirs_exist_ok=True)
    for i in range(10_000):
        f = work / "vendor" / f"pkg{i % 100}" / f"src{i % 7}" / f"File{i}.php"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"<?php\n// file {i}\nclass C{i} {{ public function f() {{ return {i}; }} }}\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    first = {"fsck on": [], "fsck off": []}
    one = {"fsck on": [], "fsck off": []}
    for r in range(runs):
        for mode in (["fsck on", "fsck off"] if r % 2 == 0 else ["fsck off", "fsck on"]):
            repo = tmp / f"fsck-{r}-{mode.replace(' ', '-')}.git"
            bare_with_pushgate(repo, tmp)
            git(repo, "config", "receive.fsckObjects", "true" if mode == "fsck on" else "false")
            first[mode].append(timed(push_cmd(repo, "HEAD:refs/heads/main"), work))
            (work / "change.php").write_text(f"<?php // {r} {mode}\n")
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", f"change {r} {mode}")
            one[mode].append(timed(push_cmd(repo, "HEAD:refs/heads/main"), work))
            shutil.rmtree(repo)
    return first, one


def external(tmp, runs):
    venv = ROOT / "target" / "bench-venv"
    if not (venv / "bin" / "check-jsonschema").exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", "check-jsonschema", "yamllint"])
    files = [SAMPLE / ".magento.app.yaml", SAMPLE / ".magento" / "services.yaml", SAMPLE / ".magento" / "routes.yaml"]
    schemas = [ROOT / "schemas" / f for f in ("app.json", "services.json", "routes.json")]

    def tools():
        start = time.perf_counter()
        run([str(venv / "bin" / "yamllint"), "-d", "relaxed", *map(str, files)], check=False)
        for f, s in zip(files, schemas):
            run([str(venv / "bin" / "check-jsonschema"), "--schemafile", str(s), str(f)], check=False)
        return time.perf_counter() - start

    ours, theirs = [], []
    for _ in range(runs):
        theirs.append(tools())
        start = time.perf_counter()
        run([str(HOOK), "check", str(SAMPLE)], check=False)
        ours.append(time.perf_counter() - start)
    return {"pushgate-hook check": ours, "yamllint + check-jsonschema": theirs}


def single_ref_report(tmp, work, runs):
    t1, shares = single_ref(tmp, work, runs)
    base = statistics.median(t1["noop"])
    print("\n1. single-ref push (median)")
    for k, v in t1.items():
        print(f"   {k:18} {ms(v)}   {statistics.median(v) / base:.3f}x the no-op hook")
    print("   (target <= 1.25x)")
    if shares:
        pre_total = statistics.median([s[0] for s in shares])
        queue = statistics.median([s[1] for s in shares])
        post = statistics.median([s[2] for s in shares])
        push = statistics.median(t1["pushgate"]) * 1000
        print(f"   inside the hooks (median of {len(shares)}): pre-receive {pre_total:.2f} ms, of which the queue"
              f" {queue:.2f} ms; post-receive {post:.2f} ms")
        print(f"   the queue's share of the push: {(queue + post) / push * 100:.1f}%"
              f" (reservation {queue:.2f} ms + post-receive {post:.2f} ms of {push:.1f} ms)")


def tree_size(tmp, runs):
    """The hooks' own time (PUSHGATE_TIMINGS) on a push of one changed file, in a repository
    whose tree has 100 files and in one with 100,000: it must not grow with the tree."""
    rows = {}
    for files in (100, 100_000):
        work = tmp / f"size-{files}"
        work.mkdir()
        git(work, "init", "-q", "-b", "main")
        shutil.copytree(SAMPLE, work, dirs_exist_ok=True)
        for i in range(files):
            f = work / "vendor" / f"p{i % 250}" / f"d{i % 13}" / f"F{i}.php"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"<?php // {i}\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "base")
        repo = tmp / f"size-{files}.git"
        bare_with_pushgate(repo, tmp)
        run(push_cmd(repo, "HEAD:refs/heads/main"), cwd=work)
        pre, post = [], []
        for r in range(runs):
            (work / "vendor" / "p0" / "d0" / "F0.php").write_text(f"<?php // run {r}\n")
            git(work, "commit", "-q", "-am", f"run {r}")
            out = run(push_cmd(repo, "HEAD:refs/heads/main", quiet=False), cwd=work,
                      env_extra={"PUSHGATE_TIMINGS": "1"})
            text = (out.stdout + out.stderr).decode()
            pre.append(float(re.search(r"pre-receive ([0-9.]+) ms", text).group(1)))
            post.append(float(re.search(r"post-receive ([0-9.]+) ms", text).group(1)))
        rows[files] = (statistics.median(pre), statistics.median(post))
    return rows


def web_benchmarks(tmp, requests, activities):
    """The console's API with `activities` activities in the store: median time of the activity
    list, the environments and an authenticated no-op (`/api/session`, the baseline) over one
    kept-alive connection; then how soon a log line written by a running build reaches an SSE
    client, against `pushgate-runner logs --follow` (the terminal's way) in the same run."""
    import http.client
    import sqlite3
    import threading
    runner = ROOT / "target" / "release" / "pushgate-runner"
    repo, data = tmp / "web.git", tmp / "web-data"
    install_at(tmp, repo, data)
    run(["git", "--git-dir", str(repo), "config", "pushgate.pickupWaitMs", "0"])
    work = tmp / "web-work"
    shutil.copytree(ROOT / "examples" / "magento", work)
    app = work / ".magento.app.yaml"
    text = app.read_text()
    marks = "for i in $(seq 1 40); do echo \"mark $(date +%s.%N)\"; sleep 0.1; done"
    start = text.index("hooks:")
    end = text.index("\n", text.index("build:", start))
    app.write_text(text[:end] + "\n        " + marks + text[end:] if "build: |" in text[start:end + 1]
                   else text)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "base")
    run(["git", "push", str(repo), "HEAD:refs/heads/main"], cwd=work)
    run([str(runner), "serve", "--until-idle", "--data", str(data)])
    token = run([str(runner), "token", "create", "bench", "--role", "admin", "--data", str(data)]).stdout.decode().split()[-1]
    # Fill the store: copies of the first job.
    db = sqlite3.connect(data / "queue.sqlite3")
    cols = [r[1] for r in db.execute("PRAGMA table_info(jobs)") if r[1] != "id"]
    db.executemany(f"INSERT INTO jobs ({', '.join(cols)}) SELECT {', '.join(cols)} FROM jobs WHERE id = 1",
                   [()] * (activities - 1))
    db.execute("DELETE FROM job_ends")
    db.commit()
    db.close()
    port = 17000 + os.getpid() % 1000
    serving = subprocess.Popen([str(runner), "serve", "--http", f"127.0.0.1:{port}", "--data", str(data)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=open(tmp / "web.log", "wb"))
    figures = {}
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
                break
            except OSError:
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": f"Bearer {token}"}
        paths = {"/api/session (baseline)": "/api/session", "activities (50 newest)": "/api/projects/web/activities",
                 "environments": "/api/projects/web/environments"}
        for label, path in paths.items():
            times = []
            for i in range(requests + 10):
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    sys.exit(f"GET {path}: {r.status}")
                if i >= 10:
                    times.append(time.perf_counter() - t0)
            figures[label] = times
        # A build that writes a timestamped line every 100 ms; an SSE client and `logs --follow`
        # both read it, each line's delay measured against the time in it.
        (work / "bump.txt").write_text("a new tree: built again\n")
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", "again")
        run(["git", "push", "-o", "pushgate.nowait", str(repo), "HEAD:refs/heads/main"], cwd=work)
        job = max(j["id"] for j in json.loads(run([str(runner), "jobs", "--json", "--data", str(data)]).stdout))
        sse, cli = [], []
        def follow_sse():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", f"/api/activities/{job}/log", headers=dict(headers, Accept="text/event-stream"))
            r = c.getresponse()
            while True:
                line = r.fp.readline()
                if not line or line.startswith(b"event: end"):
                    return
                m = re.search(rb"^data: mark (\d+\.\d+)", line)
                if m:
                    sse.append(time.time() - float(m.group(1)))
        def follow_cli():
            p = subprocess.Popen([str(runner), "logs", str(job), "--follow", "--data", str(data)], stdout=subprocess.PIPE)
            for line in p.stdout:
                m = re.search(rb"^mark (\d+\.\d+)", line)
                if m:
                    cli.append(time.time() - float(m.group(1)))
            p.wait()
        threads = [threading.Thread(target=follow_sse), threading.Thread(target=follow_cli)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        serving.terminate()
        serving.wait()
    return figures, sse, cli


def scale_benchmarks(tmp, jobs, pushes):
    """The queue on SQLite and on PostgreSQL: hook time per push against a no-op hook; jobs run
    per second by 1, 2 and 4 runners (trivial hooks, one environment per job); push accepted to
    job claimed with a runner waiting."""
    runner = ROOT / "target" / "release" / "pushgate-runner"
    base = f"pushgate_bench_{os.getpid()}"
    made = []

    def database(name):
        name = f"{base}_{name}"
        run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {name}"])
        made.append(name)
        return f"postgres://postgres@127.0.0.1:5432/{name}"

    def install(name, queue):
        repo, data = tmp / f"{name}.git", tmp / f"{name}-data"
        install_at(tmp, repo, data, *(["--queue", queue] if queue else []))
        return repo, data

    def queue_args(queue):
        return ["--queue", queue] if queue else []

    work = tmp / "scale-work"
    example_work(work)
    try:
        # Hook time per push.
        noop = tmp / "scale-noop.git"
        bare_with_noop(noop)
        repos = {"no-op hook": noop, "SQLite": install("scale-sqlite", None)[0],
                 "PostgreSQL": install("scale-pg", database("hook"))[0]}
        for repo in repos.values():
            run(push_cmd(repo, "HEAD:refs/heads/main"), cwd=work)
        hook = {k: [] for k in repos}
        for i in range(pushes):
            git(work, "commit", "-q", "--allow-empty", "-m", f"push {i}")
            for k, repo in repos.items():
                hook[k].append(timed(push_cmd(repo, "HEAD:refs/heads/main"), work))

        # Jobs per second: `jobs` branches in one push, then N runners until the queue is empty.
        branches = [f"HEAD:refs/heads/b{i}" for i in range(jobs)]
        throughput = {}
        for store in ("SQLite", "PostgreSQL"):
            for n in (1, 2, 4):
                queue = database(f"run{n}") if store == "PostgreSQL" else None
                repo, data = install(f"scale-{store}-{n}", queue)
                run(["git", "push", "-q", "-o", "pushgate.nowait", str(repo), *branches], cwd=work)
                start = time.perf_counter()
                procs = [subprocess.Popen([str(runner), "serve", "--until-idle", "--data", str(data),
                                           *queue_args(queue)], env=ENV, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL) for _ in range(n)]
                for p in procs:
                    p.wait()
                elapsed = time.perf_counter() - start
                done = json.loads(run([str(runner), "jobs", "--json", "--data", str(data), *queue_args(queue)]).stdout)
                ok = sum(1 for j in done if j["state"] == "succeeded")
                throughput[(store, n)] = (ok, elapsed)

        # Push accepted -> job claimed, a runner waiting (FIFO wake-up / LISTEN).
        def at(ts):
            from datetime import datetime, timezone
            return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
        latency = {}
        for store in ("SQLite", "PostgreSQL"):
            queue = database("latency") if store == "PostgreSQL" else None
            repo, data = install(f"scale-latency-{store}", queue)
            serving = subprocess.Popen([str(runner), "serve", "--data", str(data), *queue_args(queue)], env=ENV,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1)
                for i in range(pushes):
                    git(work, "commit", "-q", "--allow-empty", "-m", f"latency {i}")
                    run(["git", "push", "-q", str(repo), f"HEAD:refs/heads/l{i}"], cwd=work)  # waits for the job
                done = json.loads(run([str(runner), "jobs", "--json", "--data", str(data), *queue_args(queue)]).stdout)
            finally:
                serving.terminate()
                serving.wait()
            latency[store] = [at(j["started_at"]) - at(j["created_at"]) for j in done if j.get("started_at")]
        return hook, throughput, latency
    finally:
        for name in made:
            run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                check=False)


def release_below(top):
    """Stops the supervisors and forwarders whose command line names `top`, and unmounts what
    is mounted below it (the environments' disks), deepest first."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if (args[0].endswith(b"pushgate-runner") and len(args) > 1 and args[1] in (b"supervise", b"forward")
                and any(a.startswith(top.encode()) for a in args)):
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
    points = [line.split()[4] for line in open("/proc/self/mountinfo")]
    for point in sorted((p for p in points if p.startswith(top + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def sandbox_benchmarks(tmp, runs):
    """The cost of the hooks' sandbox: the same redeploys (deploy and post_deploy hooks of the
    example) through a runner with its sandbox and one with --no-sandbox, interleaved. Per hook,
    from the job logs' millisecond timestamps: `Running hook` to `Hook ... succeeded`."""
    runner = ROOT / "target" / "release" / "pushgate-runner"
    from datetime import datetime

    def at(line):
        return datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()

    sides = {}
    for name, flags in (("sandbox", []), ("no sandbox", ["--no-sandbox"])):
        key = name.replace(" ", "-")
        repo, data, work = tmp / f"{key}.git", tmp / f"{key}-data", tmp / f"{key}-work"
        install_at(tmp, repo, data)
        run(["git", "--git-dir", str(repo), "config", "pushgate.pickupWaitMs", "30000"])
        example_work(work)
        serving = subprocess.Popen([str(runner), "serve", "--data", str(data), *flags], env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=open(tmp / f"{key}-runner.log", "wb"))
        for _ in range(100):
            if (data / "wakeup").exists():
                break
            time.sleep(0.05)
        run(["git", "push", str(repo), "HEAD:refs/heads/main"], cwd=work)  # first deployment: builds
        sides[name] = {"repo": repo, "data": data, "work": work, "serving": serving, "push": [], "hook": []}
    try:
        for i in range(runs):
            for side in sides.values():
                git(side["work"], "commit", "-q", "--allow-empty", "-m", f"redeploy {i}")  # same tree
                side["push"].append(timed(["git", "push", "-q", str(side["repo"]), "HEAD:refs/heads/main"], side["work"]))
        for side in sides.values():
            jobs = json.loads(run([str(runner), "jobs", "--json", "--data", str(side["data"])]).stdout)
            for job in jobs[1:]:
                log = run([str(runner), "logs", str(job["id"]), "--data", str(side["data"])]).stdout.decode()
                started = None
                for line in log.splitlines():
                    if "] Running hook `" in line:
                        started = at(line)
                    elif "] Hook `" in line and "succeeded" in line and started is not None:
                        side["hook"].append(at(line) - started)
                        started = None
    finally:
        for side in sides.values():
            side["serving"].terminate()
            side["serving"].wait()
    return {name: (side["push"], side["hook"]) for name, side in sides.items()}


def network_benchmarks(tmp):
    """An environment's Redis reached through its network's forwarder (pushgate-runner forward,
    from inside the environment's namespace) against the same Redis reached directly on the
    host, interleaved: kept connections (what a worker's persistent connection pays) and a new
    connection per request (what a PHP request opening its connection pays)."""
    if os.geteuid() != 0 or not shutil.which("nsenter") or not shutil.which("redis-benchmark"):
        sys.exit("the network benchmark needs root, nsenter (util-linux) and redis-benchmark (redis-tools)")
    runner = ROOT / "target" / "release" / "pushgate-runner"
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
    ns = Path("/run/pushgate/netns") / f"bench-{os.getpid()}"
    spec = tmp / "net.json"
    at = f"127.0.0.1:{port}"
    spec.write_text(json.dumps({"ns": str(ns), "inward": [{"listen": at, "to": at}], "outward": []}))
    forward = subprocess.Popen([str(runner), "forward", "--spec", str(spec)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if ns.exists() and run(["nsenter", f"--net={ns}", "redis-cli", "-p", str(port), "ping"],
                                   check=False).stdout.strip() == b"PONG":
                break
            time.sleep(0.05)

        def rps(inside, clients, keepalive):
            cmd = ["redis-benchmark", "-p", str(port), "-t", "ping_mbulk", "-n", "40000" if keepalive else "8000",
                   "-c", str(clients), "-k", "1" if keepalive else "0", "-q"]
            out = run((["nsenter", f"--net={ns}"] if inside else []) + cmd).stdout.decode()
            return float(re.search(r"([\d.]+) requests per second", out).group(1))

        figures = {}
        for clients, keepalive in ((1, True), (8, True), (8, False)):
            through, direct = [], []
            for i in range(4):  # interleaved, each going first in turn
                for inside in ((True, False) if i % 2 == 0 else (False, True)):
                    (through if inside else direct).append(rps(inside, clients, keepalive))
            figures[(clients, keepalive)] = (statistics.median(through), statistics.median(direct))
        return figures
    finally:
        forward.terminate()
        forward.wait()
        redis.terminate()
        redis.wait()
        run(["umount", "-l", str(ns)], check=False)
        ns.unlink(missing_ok=True)


def big_tree(root, files, megabytes):
    """A Magento-size tree, the same every time: `files` files in vendor/ (PHP-like text, a few
    binaries), about `megabytes` MB in all, beside the example's configuration."""
    import random
    rng = random.Random(17)
    words = [f"word{i}" for i in range(500)] + ["function", "return", "class", "public", "$this->", "array(", ");"]
    per_file = megabytes * 1_000_000 // files
    for i in range(files):
        d = root / "vendor" / f"vendor{i % 50}" / f"module{i % 700}" / "src"
        d.mkdir(parents=True, exist_ok=True)
        if i % 100 == 0:
            (d / f"asset{i}.bin").write_bytes(rng.randbytes(per_file))
        else:
            line = " ".join(rng.choice(words) for _ in range(12)) + "\n"
            (d / f"File{i}.php").write_text("<?php\n" + line * max(1, per_file // len(line)))


def big_tree_benchmarks(tmp, files, megabytes, rounds):
    """Issue 17: a first deploy, a redeploy of the same tree and of a tree with one file
    changed, push to `current` switched, interleaved with the physical pipeline on the same
    tree; the runner's peak memory."""
    runner = ROOT / "target" / "release" / "pushgate-runner"
    work = tmp / "big-work"
    example_work(work)
    start = time.perf_counter()
    big_tree(work, files, megabytes)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "big tree")
    made = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (work / "vendor").rglob("*") if p.is_file())
    first, physical, same, changed, peaks, phases, archives = [], [], [], [], [], [], []
    changed_phases = []
    for r in range(rounds):
        repo, data = tmp / f"big{r}.git", tmp / f"big{r}-data"
        install_at(tmp, repo, data)
        run(["git", "--git-dir", str(repo), "config", "pushgate.pickupWaitMs", "600000"])
        # The physical pipeline on the same tree, from the same kind of bare repository.
        # (Pushed inactive: no job, the runner's first job is main's.)
        run(["git", "push", "-q", "-o", "pushgate.nowait", "-o", "environment.status=inactive", str(repo),
             "HEAD:refs/heads/plain"], cwd=work)
        out = tmp / f"plain{r}"
        run(["sync"])
        start = time.perf_counter()
        run(["bash", "-c", f"set -e; mkdir -p {out}/build {out}/release; git --git-dir {repo} archive plain | tar -x -C {out}/build;"
             f" tar -C {out}/build -cf - . | zstd -3 -q -o {out}/slug.tar.zst; rm -rf {out}/build;"
             f" zstd -dc {out}/slug.tar.zst | tar -x -C {out}/release; chmod -R a-w {out}/release"])
        physical.append(time.perf_counter() - start)
        run(["chmod", "-R", "u+w", str(out)])
        shutil.rmtree(out)
        serving = subprocess.Popen([str(runner), "serve", "--data", str(data)], env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=open(tmp / f"big{r}-runner.log", "wb"))
        try:
            for _ in range(100):
                if (data / "wakeup").exists():
                    break
                time.sleep(0.05)
            # Each measure starts with what the one before wrote on the disk (`sync`): the
            # physical pipeline leaves about a gigabyte to write back, which would slow whatever
            # runs next on this machine's disk.
            run(["sync"])
            first.append(timed(["git", "push", "-q", str(repo), "HEAD:refs/heads/main"], work))
            # Where the first deploy's time goes, from its log's timestamps.
            phases.append(job_phases(runner, data, 1))
            # The same export by git, for comparison.
            plain = tmp / f"archive{r}"
            plain.mkdir()
            run(["sync"])
            start = time.perf_counter()
            run(["bash", "-c", f"git --git-dir {repo} archive plain | tar -x -C {plain}"])
            archives.append(time.perf_counter() - start)
            shutil.rmtree(plain)
            git(work, "commit", "-q", "--allow-empty", "-m", "same tree")
            same.append(timed(["git", "push", "-q", str(repo), "HEAD:refs/heads/main"], work))
            f = next((work / "vendor").rglob("File1.php"))
            f.write_text(f.read_text() + f"// round {r}\n")
            git(work, "commit", "-q", "-am", "one file")
            changed.append(timed(["git", "push", "-q", str(repo), "HEAD:refs/heads/main"], work))
            changed_phases.append(job_phases(runner, data, 3))
            status = Path(f"/proc/{serving.pid}/status").read_text()
            peaks.append(int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1]) / 1024)
        finally:
            serving.terminate()
            serving.wait()
        run(["bash", "-c", f"chmod -R u+w {data} && rm -rf {data} {repo}"], check=False)
    return files, size, made, first, physical, same, changed, peaks, phases, archives, changed_phases


def job_phases(runner, data, job):
    """Where a job's time went, from its log's timestamps: export (or bringing the project's
    exported tree to the commit), the build hook, packing, and from the slug to `current`."""
    from datetime import datetime
    log = run([str(runner), "logs", str(job), "--data", str(data)]).stdout.decode().splitlines()

    def at(needle, after=None):
        line = next(l for l in log if needle in l and (after is None or after in l))
        return datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
    hook = at("] Hook `build`") - at("] Running hook `build`") if any("Running hook `build`" in l for l in log) else 0.0
    # The slug is packed while the release is made (after a build in layers): one span for both.
    return {"export": at("Building application") - at("Exporting commit"), "hook": hook,
            "slug and release": at("`current` switched") - at("Preparing slug")}


def ms(xs):
    return f"{statistics.median(xs) * 1000:8.2f} ms (min {min(xs) * 1000:.2f}, n={len(xs)})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=41)
    ap.add_argument("--branch-runs", type=int, default=5)
    ap.add_argument("--skip-external", action="store_true")
    ap.add_argument("--only", default="push,branches,hostile,runner,router,web,scale,sandbox,network,external,fsck,size",
                    help="comma-separated sections: push, branches, hostile, runner, router, web, scale, sandbox, "
                         "network, clone, big, external, fsck, size")
    ap.add_argument("--activities", type=int, default=10_000, help="activities in the store for the web section")
    ap.add_argument("--clone-mb", type=int, default=1024, help="size of the database the clone section copies")
    ap.add_argument("--big-files", type=int, default=60_000, help="files of the big tree section's tree")
    ap.add_argument("--big-mb", type=int, default=400, help="megabytes of the big tree section's tree")
    ap.add_argument("--big-rounds", type=int, default=2, help="first deployments in the big tree section")
    args = ap.parse_args()
    sections = set(args.only.split(","))
    run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    print(f"git: {git(None, '--version').stdout.decode().strip()}; cores: {os.cpu_count()}")
    # The apps' disks mounted below the directory (and the supervised forwarders naming it)
    # keep it from being removed at the end of the block: they go at exit, then it does.
    with tempfile.TemporaryDirectory(prefix="pushgate-bench-", ignore_cleanup_errors=True) as t:
        atexit.register(lambda: (release_below(t), shutil.rmtree(t, ignore_errors=True)))
        tmp = Path(t)
        os.chmod(tmp, 0o755)  # a runner started as root runs hooks and apps as the project's user
        work = work_tree(tmp)

        if "push" in sections:
            single_ref_report(tmp, work, args.runs)
        if "branches" in sections:
            t2 = many_branches(tmp, work, 1000, args.branch_runs)
            ratio = statistics.median(t2["pushgate"]) / statistics.median(t2["noop"])
            print("\n2. push of 1,000 branches (median)")
            for k, v in t2.items():
                print(f"   {k:18} {ms(v)}")
            print(f"   ratio              {ratio:.3f}x  (target <= 1.2x)")

        if "hostile" in sections:
            print("\n3. hostile pushes: pushgate-hook pre-receive on the object store, and check on the checkout")
            print(f"   {'input':28} {'size':>10} {'pre-receive':>21} {'check':>21}  exit  first error")
            for name, size, pre, check in hostile(tmp, work):
                cols = "  ".join(f"{e * 1000:7.1f}ms {rss / 1024:6.1f}MB" for e, rss, _, _ in (pre, check))
                print(f"   {name:28} {size:>10}  {cols}  {pre[2]:>4}  {pre[3][:80]}")

        if "size" in sections:
            rows = tree_size(tmp, 21)
            print("\n7. the hooks' own time on a push of one changed file, by size of the repository's tree (median of 21)")
            for files, (pre, post) in rows.items():
                print(f"   {files:>7} files: pre-receive {pre:.2f} ms, post-receive {post:.2f} ms")

        if "fsck" in sections:
            first, one = fsck_cost(tmp, 5)
            print("\n6. receive.fsckObjects (install.sh turns it on), pushes to pushgate's repositories (median)")
            for label, t in (("first push, 10,000 files", first), ("then one changed file", one)):
                a, b = statistics.median(t["fsck on"]), statistics.median(t["fsck off"])
                print(f"   {label:26} on {a * 1000:8.1f} ms, off {b * 1000:8.1f} ms: {a / b:.2f}x")

        if "runner" in sections:
            redeploys, latencies, reused, size, ours, theirs = runner_benchmarks(tmp, min(args.runs, 21))
            print("\n4. the runner")
            print(f"   redeploy of an unchanged tree (slug reused: {reused} jobs), push to `current` switched: {ms(redeploys)}")
            print(f"   push accepted -> job claimed: median {statistics.median(latencies) * 1000:.1f} ms, "
                  f"max {max(latencies) * 1000:.1f} ms (n={len(latencies)}; target median < 250 ms)")
            mb = size / 1e6
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"   slug packing of {mb:.1f} MB: pushgate {mb / a:.1f} MB/s, tar | zstd -3 {mb / b:.1f} MB/s"
                  f" ({(mb / a) / (mb / b):.2f} of its throughput; aim >= 0.8)")

        if "router" in sections:
            with_router, without, figures = router_benchmarks(tmp, min(args.runs, 15))
            print("\n8. the router (nginx and PHP-FPM run by pushgate)")
            print(f"   redeploy of an unchanged tree, push to the new release answering at its URL: {ms(with_router)}")
            print(f"   the same without a router, push to `current` switched:                       {ms(without)}")
            for path, (ours, hand) in figures.items():
                what = "static file" if path.endswith(".txt") else "PHP page  "
                print(f"   {what} {path:11}: pushgate's router {ours:9.0f} req/s, configured by hand {hand:9.0f} req/s"
                      f" ({ours / hand:.2f}; aim >= 0.95)")

        if "web" in sections:
            figures, sse, cli = web_benchmarks(tmp, 500, args.activities)
            print(f"\n10. the web API with {args.activities:,} activities in the store (one kept-alive connection)")
            for label, times in figures.items():
                print(f"   {label:26} {ms(times)}  p95 {sorted(times)[int(len(times) * 0.95)] * 1000:.2f} ms")
            if sse and cli:
                print(f"   a build's log line reaches an SSE client in {statistics.median(sse) * 1000:.1f} ms (median, "
                      f"max {max(sse) * 1000:.1f}, n={len(sse)}); `logs --follow` in {statistics.median(cli) * 1000:.1f} ms "
                      f"(max {max(cli) * 1000:.1f}, n={len(cli)})")
            else:
                print("   no log line measured (did the build run?)")

        if "scale" in sections:
            hook, throughput, latency = scale_benchmarks(tmp, 60, min(args.runs, 21))
            print("\n11. the queue on SQLite and on PostgreSQL (local server)")
            for k, v in hook.items():
                print(f"   push of one commit, {k:11} {ms(v)}")
            for (store, n), (ok, elapsed) in throughput.items():
                print(f"   {store:10} {n} runner{'s' if n > 1 else ' '}: {ok} jobs in {elapsed:.2f} s, "
                      f"{ok / elapsed:.1f} jobs/s (trivial hooks, one environment each)")
            for store, xs in latency.items():
                print(f"   {store:10} push accepted -> job claimed: median {statistics.median(xs) * 1000:.1f} ms, "
                      f"max {max(xs) * 1000:.1f} ms (n={len(xs)})")

        if "sandbox" in sections:
            figures = sandbox_benchmarks(tmp, min(args.runs, 21))
            print("\n12. the hooks' sandbox (bubblewrap namespaces and a cgroup per hook), interleaved")
            for name, (push, hook) in figures.items():
                print(f"   {name:10} one hook, start to end: {ms(hook)}; redeploy (two hooks), push to `current` "
                      f"switched: {ms(push)}")
            a, b = (statistics.median(figures[k][0]) for k in ("sandbox", "no sandbox"))
            c, d = (statistics.median(figures[k][1]) for k in ("sandbox", "no sandbox"))
            print(f"   the sandbox costs {(c - d) * 1000:.1f} ms per hook, {(a - b) * 1000:.1f} ms per redeploy ({a / b:.2f}x)")

        if "network" in sections:
            figures = network_benchmarks(tmp)
            print("\n14. an environment's network: its Redis through the forwarder, from inside its namespace, "
                  "against directly on the host (redis-benchmark, medians of 4 interleaved rounds)")
            for (clients, keepalive), (through, direct) in figures.items():
                what = f"{clients} client{'s' if clients > 1 else ' '}, " + (
                    "kept connections      " if keepalive else "a connection a request")
                extra = (f"; a round trip {1e6 / through:.0f} us against {1e6 / direct:.0f} us"
                         if clients == 1 else "")
                print(f"   {what}: {through:7.0f} req/s through the forwarder, {direct:7.0f} req/s directly "
                      f"({through / direct:.2f}{extra})")

        if "big" in sections:
            files, size, made, first, physical, same, changed, peaks, phases, archives, changed_phases = big_tree_benchmarks(
                tmp, args.big_files, args.big_mb, args.big_rounds)
            print(f"\n13. a Magento-size tree: {files:,} files, {size / 1e6:.0f} MB (made and committed in {made:.0f} s), "
                  f"trivial hooks, interleaved")
            a, b = statistics.median(first), statistics.median(physical)
            print(f"   first deploy, push to `current` switched: {a:.1f} s (each: {', '.join(f'{x:.1f}' for x in first)}); "
                  f"the physical pipeline (git archive | tar -x, tar | zstd -3, zstd -d | tar -x, chmod -R a-w): "
                  f"{b:.1f} s ({', '.join(f'{x:.1f}' for x in physical)}): {a / b:.2f}x (aim <= 1.1x)")
            print(f"   redeploy of the same tree: {statistics.median(same):.2f} s ({', '.join(f'{x:.2f}' for x in same)}; aim < 1 s)")
            hook = statistics.median(p["hook"] for p in changed_phases)
            print(f"   one file changed: {statistics.median(changed):.2f} s ({', '.join(f'{x:.2f}' for x in changed)}; "
                  f"aim < 1.1 x its build hook ({hook:.2f} s) + 1 s = {1.1 * hook + 1:.2f} s)")
            print(f"   the runner's peak memory: {max(peaks):.0f} MB (aim < 100 MB)")
            for p, archive in zip(phases, archives):
                print(f"   first deploy's phases: export {p['export']:.2f} s (git archive | tar -x: {archive:.2f} s), "
                      f"build hook {p['hook']:.2f} s, slug and release to `current` switched {p['slug and release']:.2f} s")
            for p in changed_phases:
                print(f"   one file changed, phases: export {p['export']:.2f} s, build hook {p['hook']:.2f} s, "
                      f"slug and release to `current` switched {p['slug and release']:.2f} s")

        if "clone" in sections:
            size, rows, ours, theirs = clone_benchmark(tmp, args.clone_mb, 2)
            a, b = statistics.median(ours), statistics.median(theirs)
            print(f"\n9. copying a MariaDB database of {size / 1e6:.0f} MB ({rows} rows) to another environment")
            print(f"   pushgate-runner env sync --services (a job): {a:.1f} s; mariadb-dump | mariadb by hand: {b:.1f} s"
                  f" ({a / b:.2f}x)")

        if "external" in sections and not args.skip_external:
            t4 = external(tmp, 11)
            a, b = statistics.median(t4["yamllint + check-jsonschema"]), statistics.median(t4["pushgate-hook check"])
            print("\n5. validating the same three files (median)")
            for k, v in t4.items():
                print(f"   {k:28} {ms(v)}")
            print(f"   yamllint + check-jsonschema take {a / b:.1f}x as long as pushgate-hook check")


if __name__ == "__main__":
    main()
