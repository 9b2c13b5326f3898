#!/usr/bin/env bash
# The Debian packages on a fresh Debian 12 that runs systemd, which CI has not (its test,
# tests/tests/debian_packages.rs, installs them without services): boots a minimal bookworm
# (debootstrap) in systemd-nspawn, then does exactly what deploy/README.md says (install,
# init, enable, enroll --out, copy, set `interface`, enable) and checks that both services
# run, the agent holds only CAP_NET_RAW and reports to the collector; then upgrades to the
# second build (both services restart, the edit stays) and purges.
#
#   sudo tests/packaging/services-in-container.sh [DEB_DIR [NEXT_DEB_DIR]]
#
# DEB_DIR defaults to target/debian, NEXT_DEB_DIR to DEB_DIR/next (deploy/debian/build, the
# second time with --version VERSION+1 --out target/debian/next). Needs root, debootstrap,
# systemd-container and curl, and reaches deb.debian.org once (the root file system is kept
# in /var/tmp/otwatch-bookworm for the next run). The container shares the host's network:
# the collector listens on 127.0.0.1:8443 for the time of the check.
set -euo pipefail
cd "$(dirname "$0")/../.."
debs=${1:-target/debian}
next=${2:-$debs/next}
root=/var/tmp/otwatch-bookworm
[ "$(id -u)" = 0 ] || { echo "$0: needs root" >&2; exit 2; }
for tool in debootstrap systemd-nspawn nsenter curl; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is missing" >&2; exit 2; }
done
if [ ! -x "$root/usr/lib/systemd/systemd" ]; then
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,adduser bookworm \
        "$root.new" http://deb.debian.org/debian >/dev/null
    mv "$root.new" "$root"
fi
work=$(mktemp -d "$root/root/otwatch.XXXXXX")
cp "$debs"/otwatch-*.deb "$work/"
mkdir "$work/next" && cp "$next"/otwatch-*.deb "$work/next/"
inside=/root/$(basename "$work")

systemd-nspawn -D "$root" --boot --register=no --keep-unit --console=passive \
    >"$work/nspawn.log" 2>&1 &
nspawn=$!
stop() {
    [ -n "${leader:-}" ] && nsenter -t "$leader" -a -- systemctl poweroff >/dev/null 2>&1 || true
    sleep 2
    kill "$nspawn" 2>/dev/null || true
    rm -rf "$work"
}
trap stop EXIT
leader=
for _ in $(seq 100); do
    leader=$(pgrep -P "$nspawn" -f systemd || true)
    [ -n "$leader" ] && break
    sleep 0.2
done
[ -n "$leader" ] || { cat "$work/nspawn.log"; echo "$0: the container did not boot" >&2; exit 1; }
# Runs a shell command inside the container.
ct() { nsenter -t "$leader" -a -- /bin/sh -ec "$1"; }
# Booted: "running", or "degraded" for a unit a container cannot start (not ours).
ct "systemctl is-system-running --wait >/dev/null || true"

echo "== install, as deploy/README.md says"
ct "cd $inside && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./otwatch-collector_*.deb ./otwatch-agent_*.deb >/dev/null
    otwatch-collector init --name ct.plant.example >/dev/null
    systemctl enable --now otwatch-collector 2>/dev/null
    otwatch-collector enroll --agent hall-1 --url https://127.0.0.1:8443 --out hall-1 >/dev/null
    install -m 0644 hall-1/agent.toml /etc/otwatch/agent/agent.toml
    install -m 0640 -g otwatch hall-1/agent.token /etc/otwatch/agent/agent.token
    install -m 0644 hall-1/ca.pem /etc/otwatch/agent/ca.pem
    sed -i 's/^interface = .*/interface = \"lo\"/' /etc/otwatch/agent/agent.toml
    systemctl enable --now otwatch-agent 2>/dev/null"
viewer=$(ct "otwatch-collector enroll --viewer check" | sed -n 's/^token: //p')
ca=$root/var/lib/otwatch-collector/ca.pem

online() {
    for _ in $(seq 50); do
        if curl -fsS --cacert "$ca" -H "Authorization: Bearer $viewer" \
            https://127.0.0.1:8443/api/v1/agents 2>/dev/null | grep -q '"agent":"hall-1".*"online":true'; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}
ct "systemctl is-active otwatch-collector otwatch-agent"
online || { ct "journalctl -u otwatch-agent -u otwatch-collector --no-pager | tail -20"; echo "FAIL: the agent is not online" >&2; exit 1; }
caps=$(ct 'grep CapEff /proc/$(systemctl show -p MainPID --value otwatch-agent)/status')
[ "${caps##*:	}" = 0000000000002000 ] || { echo "FAIL: agent capabilities $caps" >&2; exit 1; }
ct "for u in otwatch-agent otwatch-collector; do systemd-analyze security \$u | tail -1; done"
echo "ok: both services active, the agent online with CAP_NET_RAW only"

echo "== upgrade"
before=$(ct "systemctl show -p InvocationID --value otwatch-agent")
ct "cd $inside/next && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./otwatch-collector_*.deb ./otwatch-agent_*.deb >/dev/null"
after=$(ct "systemctl show -p InvocationID --value otwatch-agent")
[ "$before" != "$after" ] || { echo "FAIL: the agent was not restarted on the new binary" >&2; exit 1; }
ct 'grep -q "^interface = \"lo\"" /etc/otwatch/agent/agent.toml'
ct "systemctl is-active otwatch-collector otwatch-agent"
online || { echo "FAIL: the agent is not online after the upgrade" >&2; exit 1; }
ct "dpkg-query -W otwatch-agent otwatch-collector"
echo "ok: restarted on the new version, configuration kept, agent online"

echo "== purge"
ct "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq otwatch-agent otwatch-collector >/dev/null
    ! ls -d /var/lib/otwatch-agent /var/lib/otwatch-collector /etc/otwatch 2>/dev/null
    ! systemctl is-enabled otwatch-agent 2>/dev/null"
echo "ok: purged"
echo "PASS"
