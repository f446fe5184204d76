#!/bin/sh
# Runs a throw-away Postfix instance as peer operator A: it listens on 127.0.0.1:PORT,
# offers STARTTLS with peer-a's test certificate, requires a client certificate that
# verifies against the test anchors (smtpd_tls_req_ccert), logs it, and stores what it accepts for
# peer-a.test.mssante.fr in a Maildir under DIR/mail/inbox/.
#
#   postfix-peer.sh start DIR PORT    # DIR must not be shared with anything else
#   postfix-peer.sh stop DIR
#
# Needs root and Debian's postfix package (scripts/test.sh installs it); used by
# `postfix_as_the_receiving_operator` in tests/outbound.rs.
set -eu
. "$(dirname "$0")/postfix-instance.sh"
instance_begin "$@"
mkdir -p "$dir/mail"
chown postfix:postfix "$dir/mail"
uid=$(id -u postfix) gid=$(id -g postfix)
instance_master "127.0.0.1:$port"
instance_main <<CONF
myhostname = smtp.peer-a.test.mssante.fr
mydestination =
mynetworks = 127.0.0.0/8
smtpd_tls_chain_files = $certs/peer-a.key, $certs/peer-a-chain.pem
smtpd_tls_CAfile = $certs/anchors.pem
smtpd_tls_security_level = encrypt
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
virtual_mailbox_domains = peer-a.test.mssante.fr
virtual_mailbox_base = $dir/mail
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
CONF
instance_start
