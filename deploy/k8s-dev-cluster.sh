#!/usr/bin/env bash
# A real Kubernetes 1.20.2 cluster on this one machine (control plane and one
# kubelet node running real containers), for developers and CI.
#
#   deploy/k8s-dev-cluster.sh up                build once if needed, start etcd, kube-apiserver,
#                                               kube-controller-manager, kube-scheduler, containerd and
#                                               a kubelet (node aif-node-1); wait until the node is Ready
#   deploy/k8s-dev-cluster.sh status            component health + `kubectl get nodes`; exit 0 if up, 1 if not
#   deploy/k8s-dev-cluster.sh down [--purge]    stop the daemons (--purge: also delete the state dir,
#                                               i.e. everything stored in etcd; the build cache stays)
#   deploy/k8s-dev-cluster.sh build             only build (or find cached) binaries
#
# No Kubernetes is packaged for Debian 12 and no image registry is reachable,
# so the binaries are built offline from Debian's own source package
# (kubernetes 1.20.5+really1.20.2, vendored dependencies): a deb-src entry for
# bookworm, `apt-get source --download-only kubernetes`, Debian's reflect2
# 1.0.2 in place of the vendored copy (with 1.0.1 kube-apiserver segfaults
# on the first map-bearing object under Go 1.19), then GOPATH-mode
# `make WHAT=...`. 9-14 min on 2 cores (522 s on an idle machine, 822 s
# niced beside other work), once per machine: the binaries
# are cached under $CACHE_DIR/v1.20.2/bin (override: AIF_K8S_CACHE_DIR).
# kubelet is built in the same call; should it ever fail to build, the
# control plane still comes up, without a node.
#
# What runs, on 127.0.0.1 but for the kubelet (state under
# /var/lib/aifactory-k8s-dev, override: AIF_K8S_DEV_DIR):
#   etcd                     client port 12379, peer port 12380, data in etcd/
#   kube-apiserver           https://127.0.0.1:6443; token auth file (one admin token,
#                            group system:masters), authorization Node,RBAC,
#                            service-account signing keys, a self-made CA in pki/
#   kube-controller-manager  service-account tokens, node lifecycle, garbage collection...
#   kube-scheduler           binds pods to nodes
#   containerd               Debian's containerd 1.6 + runc, its own socket and root in
#                            containerd/ (the system's containerd, if any, is not touched)
#   kubelet                  node aif-node-1, on this machine's own IP (a kubelet refuses
#                            a loopback node IP); pods get IPs from a CNI bridge (aifcni0,
#                            10.88.0.0/16) that this host can reach
#   admin.kubeconfig         for kubectl (`kubectl --kubeconfig ...`) and the Python client
#   run/<name>.pid, log/<name>.log
#
# Images: no registry is reachable, so three images are made locally from
# Debian's static busybox (deploy/oci-image.py) and imported into containerd:
# localhost/pause:aifactory (the pod sandbox), localhost/busybox:aifactory
# (sh, sleep, echo, wget...) and localhost/python:aifactory (busybox plus this
# host's Python runtime: the interpreter of the checkout's .venv, its standard
# library and the shared libraries the venv's extension modules need; replicas
# mount the venv and the source read-only, see AIFACTORY_KUBERNETES_HOST_PATHS).
# An image already imported is kept: to rebuild one, `ctr ... images rm` it and
# run `up` again. Pods must use `imagePullPolicy: Never` or
# `IfNotPresent` with one of these (or another image imported with
# `ctr --address $STATE_DIR/containerd/containerd.sock -n k8s.io images import`).
# The dev machines (containers themselves) lack CAP_SYS_RESOURCE, so containerd runs with
# restrict_oom_score_adj (without it runc cannot start a pod sandbox:
# "can't get final child's PID from pipe").
#
# PriorityClasses (deploy/k8s-priority-classes.yaml): aifactory-lent (-1000,
# lent batch pods: AIFACTORY_KUBERNETES_LENT_PRIORITY_CLASS) and
# aifactory-urgent (1000000, an example of urgent work that preempts them).
#
# `up` is idempotent and repairs: daemons alive and healthy are left alone, a
# killed one is started again (so killing kube-apiserver and running `up`
# restarts just it). Needs root (re-runs itself under sudo when not root).
set -euo pipefail

K8S_VERSION=v1.20.2
CACHE_DIR=${AIF_K8S_CACHE_DIR:-/var/cache/aifactory-k8s}
BIN_DIR=$CACHE_DIR/$K8S_VERSION/bin
BUILD_LOG=$CACHE_DIR/build.log
SRC_LIST=/etc/apt/sources.list.d/aifactory-deb-src.sources
PACKAGES=(golang-go etcd-server rsync golang-github-modern-go-reflect2-dev)
NODE_PACKAGES=(containerd runc containernetworking-plugins busybox-static)
REFLECT2=/usr/share/gocode/src/github.com/modern-go/reflect2
CONTROL_PLANE=(kube-apiserver kube-controller-manager kube-scheduler)

log() { echo "==> $*"; }
warn() { echo "warning: $*" >&2; }
die() {
    echo "error: $1" >&2
    [ $# -lt 2 ] || echo "fix: $2" >&2
    exit 1
}

apt_install() { # packages...
    local rc=0 logf=$CACHE_DIR/apt.log
    mkdir -p "$CACHE_DIR"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$logf" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        apt-get update -qq >>"$logf" 2>&1 || true
        rc=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >>"$logf" 2>&1 || rc=$?
    fi
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$logf" >&2
        die "apt-get install $* failed (log: $logf)" "run 'apt-get update' and retry; the packages come from Debian 12 (bookworm)"
    fi
}

binaries_cached() {
    local b
    for b in "${CONTROL_PLANE[@]}"; do [ -x "$BIN_DIR/$b" ] || return 1; done
}

ensure_deb_src() {
    [ -f "$SRC_LIST" ] && return 0
    log "adding a deb-src entry for bookworm ($SRC_LIST)…"
    cat >"$SRC_LIST" <<SRC
# Added by aifactory deploy/k8s-dev-cluster.sh: Kubernetes is built from Debian's source package.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq >"$CACHE_DIR/apt.log" 2>&1 ||
        die "apt-get update failed (log: $CACHE_DIR/apt.log)" "check the network to deb.debian.org"
}

# Build in the background and print one status line every 30 s: the build
# is long (~10-12 min on 2 cores) and silence would look like a hang.
make_with_progress() { # src-dir WHAT
    local src=$1 what=$2 pid t0 rc=0
    t0=$(date +%s)
    (cd "$src" && env HOME="$CACHE_DIR" CGO_ENABLED=0 make WHAT="$what") >>"$BUILD_LOG" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 30 &
        wait $! || true
        kill -0 "$pid" 2>/dev/null || break
        echo "    … building ($(($(date +%s) - t0)) s so far; log: $BUILD_LOG): $(tail -n 1 "$BUILD_LOG" | cut -c1-100)"
    done
    wait "$pid" || rc=$?
    return "$rc"
}

build_binaries() {
    local t0 work src b
    t0=$(date +%s)
    mkdir -p "$CACHE_DIR/src" "$BIN_DIR"
    ensure_deb_src
    log "installing the build dependencies (${PACKAGES[*]})…"
    apt_install "${PACKAGES[@]}"
    [ -d "$REFLECT2" ] || die "Debian's reflect2 copy is missing at $REFLECT2" "apt-get install --reinstall golang-github-modern-go-reflect2-dev"
    if ! compgen -G "$CACHE_DIR/src/kubernetes_*.dsc" >/dev/null; then
        log "downloading Debian's kubernetes source package…"
        (cd "$CACHE_DIR/src" && apt-get source --download-only kubernetes) >>"$CACHE_DIR/apt.log" 2>&1 ||
            die "apt-get source kubernetes failed (log: $CACHE_DIR/apt.log)" "check $SRC_LIST and run 'apt-get update'"
    fi
    work=$CACHE_DIR/build
    rm -rf "$work"
    mkdir -p "$work"
    src=$work/kubernetes
    log "unpacking the source…"
    dpkg-source -x "$(compgen -G "$CACHE_DIR/src/kubernetes_*.dsc" | head -n 1)" "$src" >"$BUILD_LOG" 2>&1 ||
        die "dpkg-source -x failed (log: $BUILD_LOG)"
    # The vendored reflect2 (1.0.1) crashes kube-apiserver on the first
    # map-bearing object under Go 1.19; Debian's 1.0.2 does not.
    rm -rf "$src/vendor/github.com/modern-go/reflect2"
    cp -r "$REFLECT2" "$src/vendor/github.com/modern-go/reflect2"
    log "building ${CONTROL_PLANE[*]} kubelet $K8S_VERSION (GOPATH mode, 9-14 min on 2 cores)…"
    if ! make_with_progress "$src" "cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet"; then
        warn "the build with kubelet failed; retrying the control plane alone (log: $BUILD_LOG)"
        make_with_progress "$src" "cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler" || {
            tail -n 30 "$BUILD_LOG" >&2
            die "building Kubernetes failed (log: $BUILD_LOG)" "read the log; a rerun of '$0 up' starts the build again"
        }
    fi
    for b in "${CONTROL_PLANE[@]}" kubelet; do
        [ -x "$src/_output/bin/$b" ] && install -m 0755 "$src/_output/bin/$b" "$BIN_DIR/$b"
    done
    binaries_cached || die "the build finished but binaries are missing from $src/_output/bin"
    rm -rf "$work"
    log "built Kubernetes $K8S_VERSION in $(($(date +%s) - t0)) s; cached in $BIN_DIR"
}


STATE_DIR=${AIF_K8S_DEV_DIR:-/var/lib/aifactory-k8s-dev}
KUBECONFIG_FILE=$STATE_DIR/admin.kubeconfig
PKI=$STATE_DIR/pki
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
API_PORT=6443
API_URL=https://127.0.0.1:$API_PORT
SERVICE_CIDR=10.0.0.0/24
UP_TIMEOUT=${AIF_K8S_UP_TIMEOUT:-90}
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)
NODE_NAME=aif-node-1
CTR_SOCK=$STATE_DIR/containerd/containerd.sock
CNI_BRIDGE=aifcni0
POD_CIDR=10.88.0.0/16
IMAGES=(localhost/pause:aifactory localhost/busybox:aifactory localhost/python:aifactory)
HERE=$(cd "$(dirname "$0")" && pwd)

usage() {
    cat <<USAGE
usage: $0 up|down|status|build [--purge]
  up       build Kubernetes $K8S_VERSION if not cached, start etcd, kube-apiserver,
           kube-controller-manager and kube-scheduler on 127.0.0.1, wait until ready
  down     stop them (--purge: also delete $STATE_DIR)
  status   exit 0 if the API server is up and every daemon runs, 1 otherwise
  build    only build the binaries into $BIN_DIR (skipped when cached)
Kubeconfig: $KUBECONFIG_FILE
USAGE
}

# ---------------------------------------------------------------- helpers

pidfile() { echo "$STATE_DIR/run/$1.pid"; }

daemon_alive() { # name
    local f pid
    f=$(pidfile "$1")
    [ -s "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # /proc/PID/exe names the binary even when comm is cut to 15 characters.
    [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = "$1" ]
}

admin_token() { cat "$PKI/admin.token"; }

api_ready() {
    [ -s "$PKI/admin.token" ] || return 1
    curl -sf --max-time 3 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(admin_token)" \
        "$API_URL/readyz" >/dev/null 2>&1
}

# shellcheck disable=SC2317 # called through wait_for
etcd_ok() { curl -sf --max-time 3 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }

kubectl_admin() { timeout 15 kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

show_logs() {
    local name
    for name in "${DAEMONS[@]}"; do
        [ -f "$STATE_DIR/log/$name.log" ] || continue
        echo "---- tail $STATE_DIR/log/$name.log" >&2
        tail -n 12 "$STATE_DIR/log/$name.log" >&2 || true
    done
}

# ---------------------------------------------------------------- keys and config

# Each piece is made once and kept: a running cluster keeps trusting them.
make_pki() {
    mkdir -p "$PKI"
    chmod 0700 "$PKI"
    (
        cd "$PKI"
        if [ ! -s ca.crt ]; then
            log "creating the cluster CA…"
            openssl genrsa -out ca.key 2048 2>/dev/null
            openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=aifactory-k8s-dev-ca" -out ca.crt 2>/dev/null
        fi
        if [ ! -s apiserver.crt ]; then
            sign_cert apiserver "/CN=kube-apiserver" serverAuth \
                "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
        fi
        if [ ! -s apiserver-kubelet-client.crt ]; then
            sign_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
        fi
        if [ ! -s sa.key ]; then
            openssl genrsa -out sa.key 2048 2>/dev/null
            openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
        fi
        if [ ! -s admin.token ]; then
            od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >admin.token
            # token,user,uid,"groups"
            printf '%s,admin,admin,"system:masters"\n' "$(cat admin.token)" >tokens.csv
        fi
        chmod 0600 ./*.key admin.token tokens.csv
    ) || die "creating keys with openssl failed in $PKI" "delete $PKI and run '$0 up' again"
}

sign_cert() { # name subject extendedKeyUsage [extra extension line]: a key and a CA-signed cert
    local name=$1
    openssl genrsa -out "$name.key" 2048 2>/dev/null
    openssl req -new -key "$name.key" -subj "$2" -out "$name.csr" 2>/dev/null
    printf '%s\n' "extendedKeyUsage=$3" "keyUsage=digitalSignature,keyEncipherment" ${4:+"$4"} >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

write_kubeconfig() {
    local tmp
    tmp=$(mktemp "$STATE_DIR/kubeconfig.XXXXXX")
    cat >"$tmp" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: aifdev
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: admin
  user:
    token: $(admin_token)
contexts:
- name: aifdev
  context:
    cluster: aifdev
    user: admin
    namespace: default
current-context: aifdev
KUBECONFIG
    chmod 0600 "$tmp"
    mv "$tmp" "$KUBECONFIG_FILE"
}

# ---------------------------------------------------------------- start

start_daemon() { # name argv...
    local name=$1
    shift
    daemon_alive "$name" && return 0
    log "starting $name…"
    # setsid: the daemons outlive this script and the terminal that ran it.
    setsid "$@" >>"$STATE_DIR/log/$name.log" 2>&1 </dev/null &
    echo $! >"$(pidfile "$name")"
}

wait_for() { # what command...: poll until the command succeeds or UP_TIMEOUT passes
    local what=$1 deadline
    shift
    deadline=$(($(date +%s) + UP_TIMEOUT))
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            show_logs
            die "$what not ready after ${UP_TIMEOUT} s" \
                "read the logs above (all under $STATE_DIR/log), then run '$0 down' and '$0 up' again"
        fi
        sleep 0.3
    done
}

start_etcd() {
    start_daemon etcd etcd --name aifdev --data-dir "$STATE_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "aifdev=http://127.0.0.1:$ETCD_PEER_PORT"
    wait_for "etcd (port $ETCD_CLIENT_PORT)" etcd_ok
}

start_apiserver() {
    local i
    if daemon_alive kube-apiserver && ! api_ready; then
        # Still starting, still draining after a SIGTERM (that can take a
        # minute) or hung: give it 15 s, then start a fresh one.
        for ((i = 0; i < 50; i++)); do
            api_ready && break
            sleep 0.3
        done
        if ! api_ready; then
            warn "kube-apiserver runs but does not answer; restarting it"
            stop_daemon kube-apiserver
        fi
    fi
    start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
        --secure-port "$API_PORT" --insecure-port 0 \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP,Hostname \
        --token-auth-file "$PKI/tokens.csv" \
        --authorization-mode Node,RBAC \
        --service-account-key-file "$PKI/sa.pub" \
        --service-account-signing-key-file "$PKI/sa.key" \
        --service-account-issuer https://kubernetes.default.svc \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --allow-privileged=true \
        --cert-dir "$STATE_DIR/apiserver-certs"
    wait_for "kube-apiserver ($API_URL)" api_ready
}

start_controllers() {
    start_daemon kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig "$KUBECONFIG_FILE" \
        --bind-address 127.0.0.1 --port 0 \
        --leader-elect=false \
        --use-service-account-credentials=true \
        --service-account-private-key-file "$PKI/sa.key" \
        --root-ca-file "$PKI/ca.crt" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --cert-dir "$STATE_DIR/controller-manager-certs"
    start_daemon kube-scheduler "$BIN_DIR/kube-scheduler" \
        --kubeconfig "$KUBECONFIG_FILE" \
        --bind-address 127.0.0.1 --port 0 \
        --leader-elect=false \
        --cert-dir "$STATE_DIR/scheduler-certs"
}

# ---------------------------------------------------------------- the node

node_ip() { # this machine's own address (a kubelet refuses a loopback node IP)
    local ip
    ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}' | head -n 1)
    [ -n "$ip" ] || ip=$(hostname -I 2>/dev/null | awk '{print $1}')
    [ -n "$ip" ] || die "cannot find this machine's IP address for the kubelet" "check 'ip route'"
    echo "$ip"
}

ctr_k8s() { timeout 60 ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

containerd_ok() { ctr_k8s version >/dev/null 2>&1; }

write_node_config() {
    mkdir -p "$STATE_DIR/containerd" "$STATE_DIR/cni" "$STATE_DIR/kubelet"
    cat >"$STATE_DIR/containerd/config.toml" <<TOML
version = 2
root = "$STATE_DIR/containerd/root"
state = "$STATE_DIR/containerd/state"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${IMAGES[0]}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE_DIR/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
TOML
    cat >"$STATE_DIR/cni/10-aifdev.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "aifdev", "plugins": [
  {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$STATE_DIR/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
CNI
    # Only the API server (its client certificate comes from our CA) can talk
    # to this kubelet, and it listens on the node IP alone.
    cat >"$STATE_DIR/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip)
port: 10250
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
staticPodPath: ""
YAML
}

# The interpreter whose runtime goes into the python image: the checkout's
# venv when there is one (its extension modules' libraries come along).
image_python() {
    if [ -x "$HERE/../.venv/bin/python" ]; then echo "$HERE/../.venv/bin/python"; else command -v python3; fi
}

import_images() {
    local image have entry args
    have=$(ctr_k8s images ls -q 2>/dev/null || true)
    for image in "${IMAGES[@]}"; do
        grep -qxF "$image" <<<"$have" && continue
        args=()
        case "$image" in
        *pause*) entry='["/bin/sleep", "2147483647"]' ;;
        *python*)
            entry='["/bin/sh"]'
            args=(--python "$(image_python)")
            ;;
        *) entry='["/bin/sh"]' ;;
        esac
        log "building and importing the image $image (busybox ${args[*]}, no registry)…"
        python3 "$HERE/oci-image.py" "$image" "$entry" "${args[@]}" >"$STATE_DIR/containerd/image.tar" ||
            die "building $image failed" "apt-get install busybox-static python3"
        ctr_k8s images import "$STATE_DIR/containerd/image.tar" >/dev/null ||
            die "importing $image into containerd failed" "read $STATE_DIR/log/containerd.log"
        rm -f "$STATE_DIR/containerd/image.tar"
    done
}

# Ready means: the kubelet answers its health check, the Node says Ready in a
# heartbeat sent since this script started the kubelet (the Node object may
# still say Ready from before it was killed), and no not-ready taint is left
# (the scheduler would not place pods yet).
KUBELET_SINCE=""
node_ready() {
    local out ready beat taints
    curl -sf --max-time 3 http://127.0.0.1:10248/healthz >/dev/null 2>&1 || return 1
    out=$(kubectl_admin get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime} {.spec.taints[*].key}' 2>/dev/null) || return 1
    read -r ready beat taints <<<"$out"
    [ "$ready" = True ] || return 1
    # RFC 3339 UTC times of one form: text order is time order.
    [ -z "$KUBELET_SINCE" ] || [[ ! $beat < $KUBELET_SINCE ]] || return 1
    ! grep -qE 'not-ready|unreachable' <<<"${taints:-}"
}

start_node() {
    local b
    if [ ! -x "$BIN_DIR/kubelet" ]; then
        warn "no kubelet was built ($BIN_DIR/kubelet): the cluster has no node, pods stay Pending"
        return 0
    fi
    for b in containerd runc /usr/lib/cni/bridge /bin/busybox; do
        command -v "$b" >/dev/null 2>&1 || {
            log "installing the node's packages (${NODE_PACKAGES[*]})…"
            apt_install "${NODE_PACKAGES[@]}"
            break
        }
    done
    write_node_config
    start_daemon containerd containerd --config "$STATE_DIR/containerd/config.toml"
    wait_for "containerd ($CTR_SOCK)" containerd_ok
    import_images
    daemon_alive kubelet || KUBELET_SINCE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    start_daemon kubelet "$BIN_DIR/kubelet" \
        --config "$STATE_DIR/kubelet/config.yaml" \
        --kubeconfig "$KUBECONFIG_FILE" \
        --root-dir "$STATE_DIR/kubelet/root" \
        --cert-dir "$STATE_DIR/kubelet/pki" \
        --container-runtime remote \
        --container-runtime-endpoint "unix://$CTR_SOCK" \
        --pod-infra-container-image "${IMAGES[0]}" \
        --hostname-override "$NODE_NAME" \
        --node-ip "$(node_ip)"
    wait_for "node $NODE_NAME to be Ready" node_ready
}

# The kubelet does not stop its containers when it stops: kill them (and
# their sandboxes) so no pod process outlives the cluster.
stop_containers() {
    containerd_ok || return 0
    local ids id
    ids=$(ctr_k8s tasks ls -q 2>/dev/null || true)
    [ -z "$ids" ] || log "killing $(wc -w <<<"$ids") container(s)…"
    for id in $ids; do ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_k8s containers ls -q 2>/dev/null || true); do
        ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
    done
}

# Pods are refused until the token controller has made the default service
# account: wait for it, so a fresh cluster accepts pods as soon as 'up' returns.
# shellcheck disable=SC2317 # called through wait_for
default_account_ready() { kubectl_admin get serviceaccount default -o name >/dev/null 2>&1; }

cmd_up() {
    local t0
    t0=$(date +%s)
    binaries_cached || build_binaries
    command -v etcd >/dev/null || apt_install etcd-server
    mkdir -p "$STATE_DIR"/{run,log}
    chmod 0700 "$STATE_DIR"
    make_pki
    write_kubeconfig
    start_etcd
    start_apiserver
    start_controllers
    wait_for "the default service account" default_account_ready
    kubectl_admin apply -f "$HERE/k8s-priority-classes.yaml" >/dev/null ||
        die "creating the PriorityClasses of $HERE/k8s-priority-classes.yaml failed" \
            "read $STATE_DIR/log/kube-apiserver.log"
    start_node
    local name
    for name in kube-controller-manager kube-scheduler; do
        daemon_alive "$name" || {
            show_logs
            die "$name exited right after starting" "read $STATE_DIR/log/$name.log"
        }
    done
    log "Kubernetes $K8S_VERSION dev cluster up in $(($(date +%s) - t0)) s: $API_URL"
    log "kubeconfig: $KUBECONFIG_FILE  (kubectl --kubeconfig $KUBECONFIG_FILE get nodes)"
}

# ---------------------------------------------------------------- stop

stop_daemon() { # name
    local f pid i
    f=$(pidfile "$1")
    if daemon_alive "$1"; then
        pid=$(cat "$f")
        log "stopping $1…"
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "$1 still running after 10 s, killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

cmd_down() { # purge (0/1)
    local i
    stop_daemon kubelet
    stop_containers
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[$i]}"
    done
    if [ "$1" -eq 1 ]; then
        log "deleting $STATE_DIR…"
        ip link delete "$CNI_BRIDGE" 2>/dev/null || true
        # Pod sandboxes leave their mounts (shm, rootfs) behind: unmount them first.
        grep -F " $STATE_DIR/" /proc/mounts | awk '{print $2}' | sort -r | while read -r mnt; do
            umount -l "$mnt" 2>/dev/null || true
        done
        rm -rf "$STATE_DIR"
        log "Kubernetes dev cluster down and purged (binaries stay in $BIN_DIR)"
    else
        log "Kubernetes dev cluster down (state kept in $STATE_DIR)"
    fi
}

# ---------------------------------------------------------------- status

cmd_status() {
    local name down=0
    if ! binaries_cached; then
        echo "kubernetes aifdev: DOWN (not built; run '$0 up')"
        return 1
    fi
    for name in "${DAEMONS[@]}"; do
        if daemon_alive "$name"; then
            echo "$name: running (pid $(cat "$(pidfile "$name")"))"
        else
            echo "$name: not running"
            down=1
        fi
    done
    if ! api_ready; then
        echo "kubernetes aifdev: DOWN (the API server does not answer at $API_URL; run '$0 up')"
        return 1
    fi
    echo "---- kubectl get nodes"
    kubectl_admin get nodes -o wide 2>&1 || true
    if [ -x "$BIN_DIR/kubelet" ] && ! node_ready; then
        echo "kubernetes aifdev: DEGRADED (node $NODE_NAME is not Ready; run '$0 up')"
        return 1
    fi
    if [ "$down" -eq 1 ]; then
        echo "kubernetes aifdev: DEGRADED (a daemon is not running; run '$0 up')"
        return 1
    fi
    echo "kubernetes aifdev: UP ($API_URL, kubeconfig $KUBECONFIG_FILE)"
}

# ---------------------------------------------------------------- main

main() {
    local cmd="" purge=0 argv=("$@")
    while [ $# -gt 0 ]; do
        case "$1" in
        up | down | status | build)
            [ -z "$cmd" ] || {
                usage >&2
                exit 2
            }
            cmd=$1
            ;;
        --purge) purge=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            exit 2
            ;;
        esac
        shift
    done
    [ -n "$cmd" ] || {
        usage >&2
        exit 2
    }
    case "$STATE_DIR" in
    /?*/?*) ;;
    *) die "AIF_K8S_DEV_DIR must be an absolute path two levels deep at least (got '$STATE_DIR')" ;;
    esac
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            exec sudo -E "$0" "${argv[@]}"
        fi
        die "must run as root" "run it as root or install sudo"
    fi
    case "$cmd" in
    up) cmd_up ;;
    down) cmd_down "$purge" ;;
    status) cmd_status ;;
    build) binaries_cached || build_binaries ;;
    esac
}

# One line, so bash has read all of it before running: an edit of this file
# while `up` builds must not change what the running script does next.
{
    main "$@"
    exit $?
}
