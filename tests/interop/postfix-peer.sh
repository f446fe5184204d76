#!/bin/sh
# Runs a throw-away Postfix instance as peer operator A: it listens on 127.0.0.1:PORT,
# offers STARTTLS with peer-a's test certificate, asks for (and logs) a client certificate
# checked against the test anchors, and stores what it accepts for
# peer-a.test.mssante.fr in a Maildir under DIR/mail/inbox/.
#
#   postfix-peer.sh start DIR PORT    # DIR must not be shared with anything else
#   postfix-peer.sh stop DIR
#
# Needs root and Debian's postfix package; used by the ignored test
# `postfix_as_the_receiving_operator` in tests/outbound.rs.
set -eu
cmd=$1 dir=$2
certs=$(cd "$(dirname "$0")/../../certs-test" && pwd)
if [ "$cmd" = stop ]; then
    postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
    exit 0
fi
port=$3
mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/mail"
chown postfix "$dir/data"
uid=$(id -u postfix) gid=$(id -g postfix)
chown postfix:postfix "$dir/mail"
cp /etc/postfix/master.cf "$dir/etc/master.cf"
# Replace the public smtp service with one on our port; log to a file through postlogd.
sed -i -e 's/^smtp \{1,\}inet .*$/127.0.0.1:'"$port"' inet n - n - - smtpd/' "$dir/etc/master.cf"
grep -q '^postlog' "$dir/etc/master.cf" || \
    echo 'postlog unix-dgram n - n - 1 postlogd' >> "$dir/etc/master.cf"
cat > "$dir/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = smtp.peer-a.test.mssante.fr
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_tls_chain_files = $certs/peer-a.key, $certs/peer-a-chain.pem
smtpd_tls_CAfile = $certs/anchors.pem
smtpd_tls_security_level = encrypt
smtpd_tls_ask_ccert = yes
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
virtual_mailbox_domains = peer-a.test.mssante.fr
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
CONF
postfix -c "$dir/etc" check
postfix -c "$dir/etc" start
