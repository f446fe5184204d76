# The part every throw-away Postfix instance of these tests shares; sourced by the
# postfix-*.sh scripts, which add their own main.cf lines:
#
#   . "$(dirname "$0")/postfix-instance.sh"
#   instance_begin "$@"             # stop DIR: stops and exits; start DIR PORT: sets
#                                   # $dir, $port and $certs, makes the directories
#   instance_master "127.0.0.1:$port"   # the smtpd listener ("" for none)
#   instance_main <<CONF ... CONF   # main.cf: the common lines, then these
#   instance_start
#
# The instance lives in DIR alone (configuration, queue, log in DIR/maillog), so the
# system's Postfix is never touched. Needs root and Debian's postfix package.

instance_begin() {
    cmd=$1 dir=$2
    certs=$(cd "$(dirname "$0")/../../certs-test" && pwd)
    if [ "$cmd" = stop ]; then
        postfix -c "$dir/etc" stop >/dev/null 2>&1 || true
        exit 0
    fi
    port=$3
    mkdir -p "$dir/etc" "$dir/queue" "$dir/data"
    chown postfix "$dir/data"
}

instance_master() {
    cp /etc/postfix/master.cf "$dir/etc/master.cf"
    if [ -n "$1" ]; then
        sed -i -e 's/^smtp \{1,\}inet .*$/'"$1"' inet n - n - - smtpd/' "$dir/etc/master.cf"
    else
        sed -i -e 's/^smtp \{1,\}inet .*$//' "$dir/etc/master.cf"
    fi
    # Log to a file through postlogd.
    grep -q '^postlog' "$dir/etc/master.cf" || \
        echo 'postlog unix-dgram n - n - 1 postlogd' >> "$dir/etc/master.cf"
}

instance_main() {
    cat > "$dir/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
inet_interfaces = loopback-only
inet_protocols = ipv4
CONF
    cat >> "$dir/etc/main.cf"
}

instance_start() {
    postfix -c "$dir/etc" check
    postfix -c "$dir/etc" start
}
