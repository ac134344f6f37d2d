#!/usr/bin/env bash
# A one-node Garage (https://garagehq.deuxfleurs.fr, an S3-compatible object store run in
# production by self-hosters; `cargo install garage --locked`, or with `--no-default-features
# --features bundled-libs,lmdb` for a shorter build) with one bucket and one key, for
# `cargo bench --bench upload -- FILE --s3 s3://BUCKET/b`. Garage completes a multipart upload
# from its metadata, as AWS S3 does, where s3s-fs copies every part into one file first; so it
# measures Wick's S3 path rather than the test server's last copy.
#
#   bench/s3/garage.sh start DIR [BUCKET] [CPUS]   # CPUS: a taskset list, e.g. 1, to pin the server
#   eval "$(bench/s3/garage.sh env)"               # the AWS_* variables for that bucket
#   bench/s3/garage.sh stop DIR
#
# Blocks are stored uncompressed (`compression_level = "none"`: Wick's local folder does not
# compress either) and without replication; data_fsync is off, as it is by default.
set -euo pipefail

GARAGE=${GARAGE:-garage}
PORT=${GARAGE_S3_PORT:-3900}
RPC_PORT=${GARAGE_RPC_PORT:-3901}
# A fixed key for a throw-away local server: Garage's key ids are GK + 24 hex digits.
KEY_ID=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

cmd=${1:-}
case "$cmd" in
start)
    dir=$(realpath -m "${2:?usage: garage.sh start DIR [BUCKET] [CPUS]}")
    bucket=${3:-wick-bench}
    cpus=${4:-}
    mkdir -p "$dir/meta" "$dir/data"
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$PORT"
root_domain = ".s3.localhost"
EOF
    chmod 600 "$dir/garage.toml"
    g() { "$GARAGE" -c "$dir/garage.toml" "$@"; }
    if [ -n "$cpus" ]; then
        taskset -c "$cpus" "$GARAGE" -c "$dir/garage.toml" server >"$dir/server.log" 2>&1 &
    else
        "$GARAGE" -c "$dir/garage.toml" server >"$dir/server.log" 2>&1 &
    fi
    echo $! >"$dir/pid"
    for _ in $(seq 100); do
        g status >/dev/null 2>&1 && break
        sleep 0.2
    done
    node=$(g node id -q | cut -d@ -f1)
    g layout assign -z dc1 -c 10G "$node" >/dev/null
    g layout apply --version 1 >/dev/null
    g key import --yes -n bench "$KEY_ID" "$SECRET" >/dev/null
    g bucket create "$bucket" >/dev/null
    g bucket allow --read --write --owner "$bucket" --key bench >/dev/null
    echo "garage serves S3 on http://127.0.0.1:$PORT, bucket $bucket (pid $(cat "$dir/pid"))"
    ;;
env)
    echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_REGION=us-east-1" \
        "AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET"
    ;;
stop)
    dir=${2:?usage: garage.sh stop DIR}
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    ;;
*)
    echo "usage: garage.sh start DIR [BUCKET] [CPUS] | env | stop DIR" >&2
    exit 2
    ;;
esac
