#!/bin/sh
# Runs a throw-away Postfix instance as peer operator A sending to us: everything handed
# to its sendmail goes to the gateway on 127.0.0.1:PORT with TLS required and verified
# (`secure`: the gateway's chain must verify against the test anchors and name
# smtp.gateway.test.mssante.fr), presenting peer-a's client certificate and saying EHLO
# with its CN, as an operator of the espace de confiance must. It listens on nothing.
#
#   postfix-sender.sh start DIR PORT    # DIR must not be shared with anything else
#   postfix-sender.sh stop DIR
#
# Needs root and Debian's postfix package (scripts/test.sh installs it); used by
# tests/inbound.rs.
set -eu
. "$(dirname "$0")/postfix-instance.sh"
instance_begin "$@"
instance_master ""
instance_main <<CONF
myhostname = smtp.peer-a.test.mssante.fr
mydomain = peer-a.test.mssante.fr
myorigin = peer-a.test.mssante.fr
mydestination =
relayhost = [127.0.0.1]:$port
smtp_helo_name = smtp.peer-a.test.mssante.fr
smtp_tls_chain_files = $certs/peer-a.key, $certs/peer-a-chain.pem
smtp_tls_CAfile = $certs/anchors.pem
smtp_tls_security_level = secure
smtp_tls_policy_maps = inline:{ {[127.0.0.1]:$port = secure match=smtp.gateway.test.mssante.fr} }
smtp_tls_loglevel = 1
CONF
instance_start
