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
. "$(dirname "$0")/postfix-instance.sh"
instance_begin "$@"
instance_master "127.0.0.1:$port"
instance_main <<CONF
myhostname = mail.internal.gateway.test.mssante.fr
mydestination = gateway.test.mssante.fr
local_recipient_maps =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
defer_transports = smtp local error
queue_run_delay = 1s
CONF
instance_start
