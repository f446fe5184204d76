#!/bin/sh
# Runs a throw-away Postfix instance as the operator's internal mail server, configured as
# a stock Debian Postfix would be for our domain: it listens on 127.0.0.1:PORT (plain
# SMTP), takes gateway.test.mssante.fr as a local domain (mydestination, so the percent
# hack, bang paths and dequoted addresses apply, as by default) and relays for
# 127.0.0.0/8. Nothing leaves: every transport is deferred, and the log (DIR/maillog)
# says where each recipient would have gone (`to=<...>, orig_to=<...>`).
#
#   postfix-internal.sh start DIR PORT    # DIR must not be shared with anything else
#   postfix-internal.sh stop DIR
#
# Needs root and Debian's postfix package (scripts/test.sh installs it); used by
# tests/addresses.rs.
set -eu
cmd=$1 dir=$2
if [ "$cmd" = stop ]; then
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    exit 0
fi
port=$3
mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
chown postfix "$dir/data"
cp /etc/postfix/master.cf "$dir/etc/master.cf"
sed -i -e 's/^smtp \{1,\}inet .*$/127.0.0.1:'"$port"' inet n - n - - smtpd/' "$dir/etc/master.cf"
grep -q '^postlog' "$dir/etc/master.cf" || \
    echo 'postlog unix-dgram n - n - 1 postlogd' >> "$dir/etc/master.cf"
cat > "$dir/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = mail.internal.gateway.test.mssante.fr
mydestination = gateway.test.mssante.fr
local_recipient_maps =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
defer_transports = smtp local error
queue_run_delay = 1s
CONF
postfix -c "$dir/etc" check
postfix -c "$dir/etc" start
