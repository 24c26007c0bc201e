#!/usr/bin/env bash
# The README's `curl -i` transcript through a real nginx: the axum_server example (3 requests
# per minute per client) behind nginx, configured as its docs recommend for a reverse proxy,
# with TRUST_PROXY=127.0.0.1 so that clients are keyed by the X-Forwarded-For entry nginx
# appends. Prints the nginx configuration, then each command and its output:
#   1-3. the same client three times, the second with a forged X-Forwarded-For (it counts
#        against the client's own key: r goes on down), 4. the same client again: 429,
#   5.   a second client (source address 127.0.0.2): its own bucket.
# Runs nginx in the foreground as one process (no root needed; its pid, logs and temporary
# files in a temporary directory) and stops both processes on exit.
#
#   bash fluxrate/examples/behind_nginx.sh
#
# Environment: NGINX (the binary; default nginx on the PATH, else /usr/sbin/nginx),
# NGINX_PORT (8080) and APP_PORT (3000), both on 127.0.0.1, and CARGO_TARGET_DIR as for cargo.
set -euo pipefail
cd "$(dirname "$0")/../.."

nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
nginx_port=${NGINX_PORT:-8080}
app_port=${APP_PORT:-3000}
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT

# Poll until 127.0.0.1:$1 accepts connections (10 s at most).
wait_for() {
    for _ in $(seq 200); do
        if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

cargo build -q --example axum_server --features tower
target=${CARGO_TARGET_DIR:-target}
TRUST_PROXY=127.0.0.1 ADDR="127.0.0.1:$app_port" "$target/debug/examples/axum_server" \
    > "$dir/app.log" &
pids+=($!)

cat > "$dir/nginx.conf" <<EOF
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;

    server {
        listen 127.0.0.1:$nginx_port;

        location / {
            proxy_pass http://127.0.0.1:$app_port;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header Host \$host;
        }
    }
}
EOF
"$nginx" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
pids+=($!)
wait_for "$app_port"
wait_for "$nginx_port"

echo "# nginx.conf (paths shortened)"
sed -e "s|$dir|/tmp/nginx|g" "$dir/nginx.conf"
echo
echo "# $(head -1 "$dir/app.log")"
url="http://127.0.0.1:$nginx_port/"
for args in "" "-H 'X-Forwarded-For: 203.0.113.7'" "" "" "--interface 127.0.0.2"; do
    echo
    echo "\$ curl -i ${args:+$args }$url"
    eval "curl -sS -i $args $url" | tr -d '\r'
done
