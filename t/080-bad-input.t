# Bad input, one row per case:
#  (a) directives: nginx -t must refuse the configuration and name the
#      directive and/or the bad value (generated --- must_die blocks, from
#      @BAD_CONF below);
#  (b) requests: each malformed request gets its exact status and stable
#      JSON "error" code (tables %REQ below, one block per feature), and a
#      request meant for the application (proxied to /app, which answers
#      "app" and logs to logs/app.log) never reaches it.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, write_key_file, sign_link, link_set, ...
use Digest::SHA qw(sha256 hmac_sha256 hmac_sha256_hex);

use vars qw(@BAD_CONF %REQ $NOW $STRIPE $REVEAL);

$NOW = int time;
$STRIPE = 'whsec_bad_input_3c5e7a9b1d2f4a6c8e0b1d3f5a7c9e1b';

write_keys();                                       # keys/k1, k2, api
write_key_file('short', 'x' x 16);                  # too short for a link key
write_key_file('api-short', "short\n");             # too short for an api key
write_key_file('vault', sha256('bad input: the vault key'));
write_key_file('vault31', substr sha256('bad input: the vault key'), 0, 31);
write_key_file('fp', sha256('bad input: fingerprint key'));
write_key_file('fp-short', 'abc');
write_key_file('stripe', "$STRIPE\n");
write_key_file('std', "whsec_pjtVDbJVsR3E9Fte2ihvI1/xISPIqFuxPMVSL6GOWfU=\n");
write_key_file('long', 'L' x 2000);
$REVEAL = 'psd-reveal-key-080-0123456789abcdef';
write_key_file('reveal', "$REVEAL\n");

# ---------------------------------------------------------------------------
# (a) directives: [name, http_config, config, [substrings of nginx -t output],
# skip].  A row with a skip reason is a known bug: its block is generated
# with --- SKIP and passes once the bug is fixed and the reason removed.
# ---------------------------------------------------------------------------

my $R = 'psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;';
my $K = '$TEST_NGINX_CONF_DIR/keys';
my $LK = "psd_link_key k1 $K/k1;";
my $VK = "psd_vault_key a $K/vault; psd_fingerprint_key $K/fp;";
my $CS = 'location /c { psd_checkout_session on; psd_idempotency on; psd_tokenize on; psd_tokenize_field card.number pan; }';
my $WH = "psd_webhook stripe; psd_webhook_secret $K/stripe;";
my $CW = "psd_webhook carrier; psd_webhook_secret $K/stripe; psd_webhook_signature shared X-Token; "
    . 'psd_webhook_carrier_path order o; psd_webhook_carrier_path status s; psd_webhook_carrier_path time t;';

@BAD_CONF = (
    # psd_redis
    ['psd_redis: unknown option', 'psd_redis main 127.0.0.1:6379 bogus=1;', '',
        ['unknown option "bogus" in "psd_redis"']],
    ['psd_redis: timeout=0', 'psd_redis main 127.0.0.1:6379 timeout=0;', '',
        ['"timeout=0"', '"psd_redis"']],
    ['psd_redis: timeout=-1', 'psd_redis main 127.0.0.1:6379 timeout=-1;', '',
        ['"timeout=-1"', '"psd_redis"']],
    ['psd_redis: timeout=abc', 'psd_redis main 127.0.0.1:6379 timeout=abc;', '',
        ['"timeout=abc"', '"psd_redis"']],
    ['psd_redis: connect_timeout=0', 'psd_redis main 127.0.0.1:6379 connect_timeout=0;', '',
        ['"connect_timeout=0"', '"psd_redis"']],
    ['psd_redis: password_file missing', "psd_redis main 127.0.0.1:6379 password_file=$K/no-such-file;", '',
        ['cannot open secret file', 'no-such-file', '"psd_redis"']],
    ['psd_redis: empty password=', 'psd_redis main 127.0.0.1:6379 password=;', '',
        ['empty "password=" in "psd_redis"']],
    ['psd_redis: user= without a password', 'psd_redis main 127.0.0.1:6379 user=bob;', '',
        ['redis server "main" has "user=" without a password']],
    ['psd_redis: db=-1', 'psd_redis main 127.0.0.1:6379 db=-1;', '',
        ['"db=-1"', '"psd_redis"']],
    ['psd_redis: db=abc', 'psd_redis main 127.0.0.1:6379 db=abc;', '',
        ['"db=abc"', '"psd_redis"']],
    ['psd_redis: max_pending=0', 'psd_redis main 127.0.0.1:6379 max_pending=0;', '',
        ['"max_pending=0"', '"psd_redis"']],
    ['psd_redis: max_reply=abc', 'psd_redis main 127.0.0.1:6379 max_reply=abc;', '',
        ['"max_reply=abc"', '"psd_redis"']],
    ['psd_redis: duplicate name', 'psd_redis main 127.0.0.1:6379; psd_redis main 127.0.0.1:6380;', '',
        ['duplicate redis server name "main"']],
    ['psd_redis: bad name', 'psd_redis "ma in!" 127.0.0.1:6379;', '',
        ['invalid redis server name "ma in!"']],
    ['psd_redis: no address', 'psd_redis main;', '',
        ['invalid number of arguments in "psd_redis" directive']],
    ['psd_redis: port out of range', 'psd_redis main 127.0.0.1:99999;', '',
        ['invalid port in redis server "127.0.0.1:99999"']],
    ['psd_redis: tls_verify without tls', 'psd_redis main 127.0.0.1:6379 tls_verify;', '',
        ['redis server "main" has tls_* options without "tls"']],
    ['psd_redis: at server level', $R, 'psd_redis other 127.0.0.1:6379;',
        ['"psd_redis" directive is not allowed here']],
    # cluster and sentinel (issue 12; also in t/090-cluster.t, t/091-sentinel.t)
    (map { [ "psd_redis: $_->[0]", "psd_redis main $_->[1];", '', [ '"psd_redis"', @{ $_->[2] } ] ] }
        ['cluster without seeds', 'cluster', ['cluster']],
        ['cluster seed without port', 'cluster 127.0.0.1', ['"127.0.0.1"']],
        ['db= with cluster', 'cluster 127.0.0.1:6379 db=1', ['"db=1"']],
        ['sentinel without master name', 'sentinel', ['sentinel']],
        ['sentinel without sentinels', 'sentinel psdmaster', ['psdmaster']],
        ['sentinel without port', 'sentinel psdmaster 127.0.0.1', ['"127.0.0.1"']],
        ['sentinel_password= without sentinel', '127.0.0.1:6379 sentinel_password=x',
            ['option "sentinel_password"', 'needs "sentinel"']],
        ['empty sentinel_password=', 'sentinel psdmaster 127.0.0.1:26379 sentinel_password=',
            ['empty "sentinel_password="']],
        ['sentinel_password_file= without a file', 'sentinel psdmaster 127.0.0.1:26379 sentinel_password_file=/nonexistent/pw',
            ['/nonexistent/pw']],
        ['a second address without cluster or sentinel', '127.0.0.1:6379 127.0.0.1:6380',
            ['invalid value "127.0.0.1:6380"', 'need "cluster" or "sentinel"']]),
    # unknown server names in feature directives
    ['psd_link_redis: unknown server', "$R $LK", 'location /d/ { psd_link on; psd_link_revocation on; psd_link_redis nosuch; }',
        ['unknown redis server "nosuch"']],
    ['psd_limit_zone redis=: unknown server', "$R psd_limit_zone z key=\$arg_k rate=1r/s redis=nosuch;", 'location / { psd_limit z; }',
        ['unknown redis server "nosuch"']],
    ['psd_fraud_redis: unknown server', "$R psd_fraud_redis nosuch;",
        'location / { psd_fraud on; psd_fraud_rule r "count() by $remote_addr over 1h > 3" block; }',
        ['unknown redis server "nosuch"']],
    ['psd_ticket_redis: unknown server', $R, 'location /t { psd_ticket on; psd_ticket_redis nosuch; }',
        ['unknown redis server "nosuch"']],
    ['psd_tokenize_redis: unknown server', "$R $VK",
        'location /c { psd_tokenize on; psd_tokenize_field card.number pan; psd_tokenize_redis nosuch; }',
        ['unknown redis server "nosuch"']],
    ['psd_counter redis=: unknown server', $R, 'location /n { psd_counter k redis=nosuch; }',
        ['unknown redis server "nosuch"']],
    ['psd_order_redis: unknown server', $R, "location /o { psd_order_status staff; psd_order_api_key $K/api; psd_order_redis nosuch; }",
        ['unknown redis server "nosuch"']],
    ['feature without any psd_redis', '', 'location /n { psd_counter k; }',
        ['no "psd_redis" server is configured in http{}']],
    # psd_limit_zone / psd_limit
    ['psd_limit_zone: rate=10r/x', "$R psd_limit_zone z key=\$arg_k rate=10r/x;", '',
        ['invalid rate "rate=10r/x" in "psd_limit_zone"']],
    ['psd_limit_zone: rate=0r/s', "$R psd_limit_zone z key=\$arg_k rate=0r/s;", '',
        ['invalid rate "rate=0r/s"']],
    ['psd_limit_zone: rate=abc', "$R psd_limit_zone z key=\$arg_k rate=abc;", '',
        ['invalid rate "rate=abc"']],
    ['psd_limit_zone: burst=-1', "$R psd_limit_zone z key=\$arg_k rate=1r/s burst=-1;", '',
        ['invalid parameter "burst=-1" in "psd_limit_zone"']],
    ['psd_limit_zone: burst=abc', "$R psd_limit_zone z key=\$arg_k rate=1r/s burst=abc;", '',
        ['invalid parameter "burst=abc" in "psd_limit_zone"']],
    ['psd_limit_zone: no key=', "$R psd_limit_zone z rate=1r/s;", '',
        ['"psd_limit_zone" must have "key=" and "rate="']],
    ['psd_limit_zone: empty key=', "$R psd_limit_zone z key= rate=1r/s;", '',
        ['invalid parameter "key=" in "psd_limit_zone"']],
    ['psd_limit_zone: no rate=', "$R psd_limit_zone z key=\$arg_k;", '',
        ['"psd_limit_zone" must have "key=" and "rate="']],
    ['psd_limit_zone: nodes=0', "$R psd_limit_zone z key=\$arg_k rate=1r/s nodes=0;", '',
        ['"nodes=0"', '"psd_limit_zone"']],
    ['psd_limit_zone: unknown option', "$R psd_limit_zone z key=\$arg_k rate=1r/s speed=9;", '',
        ['"speed=9"', '"psd_limit_zone"']],
    ['psd_limit_zone: local_size=abc', "$R psd_limit_zone z key=\$arg_k rate=1r/s local_size=abc;", '',
        ['"local_size=abc"', '"psd_limit_zone"']],
    ['psd_limit_zone: duplicate zone', "$R psd_limit_zone z key=\$arg_k rate=1r/s; psd_limit_zone z key=\$arg_j rate=2r/s;", '',
        ['duplicate limit zone "z"']],
    ['psd_limit: unknown zone', $R, 'location / { psd_limit nozone; }',
        ['unknown limit zone "nozone"']],
    ['psd_limit: unknown flag', "$R psd_limit_zone z key=\$arg_k rate=1r/s;", 'location / { psd_limit z fast; }',
        ['invalid parameter "fast" in "psd_limit"']],
    ['psd_limit_status 200', $R, 'psd_limit_status 200;',
        ['"psd_limit_status"', '"200"']],
    ['psd_limit_failure_mode maybe', $R, 'psd_limit_failure_mode maybe;',
        ['invalid value "maybe"']],
    # fraud
    ['fraud rule: = instead of a comparison', $R, 'psd_fraud_rule too_fast "count() by $a over 1h = 1" block;',
        ['invalid fraud rule "too_fast": expected >, >=, <, <= or == at column 23']],
    ['fraud rule: unknown aggregate', $R, 'psd_fraud_rule avg_rule "avg($x) by $a over 1h > 1" block;',
        ['invalid fraud rule "avg_rule": expected "count", "distinct" or "sum" at column 1']],
    ['fraud rule: window 31d', $R, 'psd_fraud_rule long "count() by $a over 31d > 1" block;',
        ['invalid fraud rule "long": window must be from 1s to 30d']],
    ['fraud rule: missing "by"', $R, 'psd_fraud_rule noby "count() over 1h > 1" block;',
        ['invalid fraud rule "noby": expected "by" at column 9']],
    ['fraud rule: threshold not a number', $R, 'psd_fraud_rule thr "count() by $a over 1h > lots" block;',
        ['invalid fraud rule "thr": expected a number at column 25']],
    ['fraud rule: empty rule', $R, 'psd_fraud_rule empty "" block;',
        ['invalid fraud rule "empty"']],
    ['fraud rule: action deny', $R, 'psd_fraud_rule r "count() by $a over 1h > 1" deny;',
        ['invalid action "deny" in fraud rule "r"']],
    ['fraud rule: failure_mode=maybe', $R, 'psd_fraud_rule r "count() by $a over 1h > 1" block failure_mode=maybe;',
        ['invalid parameter "failure_mode=maybe" in fraud rule "r"']],
    ['psd_fraud_blocklist: unknown list', $R, 'psd_fraud_blocklist phone $http_x_phone;',
        ['invalid block list "phone"']],
    ['psd_fraud_block_status 404', $R, 'psd_fraud_block_status 404;',
        ['invalid value "404"']],
    ['psd_fraud_failure_mode maybe', $R, 'psd_fraud_failure_mode maybe;',
        ['invalid value "maybe"']],
    ['psd_fraud_admin without psd_fraud_api_key', $R, 'location /fa { psd_fraud_admin; }',
        ['"psd_fraud_admin" needs "psd_fraud_api_key"']],
    # links
    ['psd_link_key: missing file', "psd_link_key k1 $K/no-such-key;", '',
        ['cannot open secret file', 'no-such-key', '"psd_link_key"']],
    ['psd_link_key: short file', "psd_link_key k1 $K/short;", '',
        ['secret file', 'keys/short" must hold 32 to 1024 bytes']],
    ['psd_link_key: bad id', "psd_link_key bad!id $K/k1;", '',
        ['invalid key id "bad!id" in "psd_link_key"']],
    ['psd_link_key: id of 33 characters', 'psd_link_key ' . ('a' x 33) . " $K/k1;", '',
        ['"' . ('a' x 33) . '"', '"psd_link_key"']],
    ['psd_link_key: duplicate id', "psd_link_key k1 $K/k1; psd_link_key k1 $K/k2;", '',
        ['duplicate link key id "k1"']],
    ['psd_link_sign_key: unknown id', "$LK psd_link_sign_key k9;", '',
        ['"psd_link_sign_key" names unknown key "k9"']],
    ['psd_link_concurrency 1001', "$R $LK", 'psd_link_concurrency 1001;',
        ['"psd_link_concurrency"', '"1001"']],
    ['psd_link_max_ttl abc', $LK, 'psd_link_max_ttl abc;',
        ['"psd_link_max_ttl" directive invalid value']],
    ['psd_link_failure_mode maybe', $LK, 'psd_link_failure_mode maybe;',
        ['invalid value "maybe"']],
    ['psd_link_api_key: missing file', "$R $LK", "location /i { psd_link_issue; psd_link_api_key $K/no-api; }",
        ['no-api', '"psd_link_api_key"']],
    ['psd_link_api_key: short key', "$R $LK", "location /i { psd_link_issue; psd_link_api_key $K/api-short; }",
        ['secret file', 'keys/api-short" must hold 16 to 512 bytes']],
    ['psd_link on without psd_link_key', '', 'location /d/ { psd_link on; }',
        ['"psd_link" needs at least one "psd_link_key"']],
    # tokenize / detokenize / vault
    ['psd_tokenize_field: unknown kind', "$R $VK", 'location /c { psd_tokenize on; psd_tokenize_field card.number card; }',
        ['invalid field kind "card" in "psd_tokenize_field"']],
    ['psd_tokenize_field: empty path part', "$R $VK", 'location /c { psd_tokenize on; psd_tokenize_field card..number pan; }',
        ['"card..number"', '"psd_tokenize_field"']],
    ['psd_tokenize_field: trailing dot', "$R $VK", 'location /c { psd_tokenize on; psd_tokenize_field card. pan; }',
        ['"card."', '"psd_tokenize_field"']],
    ['psd_tokenize_field: empty path', "$R $VK", 'location /c { psd_tokenize on; psd_tokenize_field "" pan; }',
        ['invalid field path "" in "psd_tokenize_field"']],
    ['psd_tokenize on without a vault key', $R, 'location /c { psd_tokenize on; psd_tokenize_field card.number pan; }',
        ['card tokenization needs a "psd_vault_key"']],
    ['psd_vault_key: missing file', "psd_vault_key a $K/no-vault;", '',
        ['no-vault', '"psd_vault_key"']],
    ['psd_vault_key: 31 bytes', "psd_vault_key a $K/vault31; psd_fingerprint_key $K/fp;", '',
        ['secret file', 'keys/vault31" must hold 32']],
    ['psd_fingerprint_key: 3 bytes', "psd_vault_key a $K/vault; psd_fingerprint_key $K/fp-short;", '',
        ['secret file', 'keys/fp-short" must hold 16 to 256 bytes']],
    ['psd_tokenize_format weird', "$R $VK", 'psd_tokenize_format weird;',
        ['invalid value "weird"']],
    ['psd_detokenize_field: expiry', "$R $VK", "location /g { psd_detokenize on; psd_detokenize_secret $K/reveal; psd_detokenize_field card.exp expiry; }",
        ['invalid field kind "expiry" in "psd_detokenize_field"']],
    ['psd_detokenize without a secret', "$R $VK", 'location /g { psd_detokenize on; psd_detokenize_field card.number pan; }',
        ['"psd_detokenize" needs "psd_detokenize_secret"']],
    ['psd_idempotency_ttl abc', "$R $VK", 'psd_idempotency_ttl abc;',
        ['"psd_idempotency_ttl" directive invalid value']],
    # webhooks
    ['psd_webhook paypal', $R, "location /w { psd_webhook paypal; psd_webhook_secret $K/stripe; }",
        ['invalid value "paypal"']],
    ['psd_webhook without a secret', $R, 'location /w { psd_webhook stripe; }',
        ['"psd_webhook" needs "psd_webhook_secret"']],
    ['psd_webhook_event: unknown kind', $R, "location /w { $WH psd_webhook_event charge.succeeded shipped; }",
        ['invalid event kind "shipped" in "psd_webhook_event"']],
    ['psd_webhook_order_path: empty part', $R, "location /w { $WH psd_webhook_order_path data..order_id; }",
        ['invalid JSON path "data..order_id" in "psd_webhook_order_path"']],
    ['psd_webhook_secret: missing file', $R, "location /w { psd_webhook stripe; psd_webhook_secret $K/no-secret; }",
        ['no-secret', '"psd_webhook_secret"']],
    ['psd_webhook_tolerance abc', $R, "location /w { $WH psd_webhook_tolerance abc; }",
        ['"psd_webhook_tolerance" directive invalid value']],
    ['psd_webhook_dedupe abc', $R, "location /w { $WH psd_webhook_dedupe abc; }",
        ['"psd_webhook_dedupe" directive invalid value']],
    ['psd_webhook_pass maybe', $R, "location /w { $WH psd_webhook_pass maybe; }",
        ['invalid value "maybe" in "psd_webhook_pass" directive']],
    # carrier webhooks
    ['psd_webhook carrier without a signature', $R, "location /w { psd_webhook carrier; psd_webhook_secret $K/stripe; "
        . 'psd_webhook_carrier_path order o; psd_webhook_carrier_path status s; psd_webhook_carrier_path time t; }',
        ['"psd_webhook carrier" needs "psd_webhook_signature"']],
    ['psd_webhook carrier without a status path', $R, "location /w { psd_webhook carrier; psd_webhook_secret $K/stripe; "
        . 'psd_webhook_signature shared X-Token; psd_webhook_carrier_path order o; psd_webhook_carrier_path time t; }',
        ['"psd_webhook carrier" needs "psd_webhook_carrier_path status"']],
    ['psd_webhook_carrier_path: unknown field', $R, "location /w { $CW psd_webhook_carrier_path carrier c; }",
        ['invalid field "carrier" in "psd_webhook_carrier_path"']],
    ['psd_webhook_carrier_path: empty part', $R, "location /w { $CW psd_webhook_carrier_path tracking a..b; }",
        ['invalid JSON path "a..b" in "psd_webhook_carrier_path"']],
    ['psd_webhook_carrier_path: wildcard', $R, "location /w { $CW psd_webhook_carrier_path tracking events.*.code; }",
        ['invalid JSON path "events.*.code" in "psd_webhook_carrier_path"']],
    ['psd_webhook_carrier_path: a field twice', $R, "location /w { $CW psd_webhook_carrier_path order p; }",
        ['duplicate field "order" in "psd_webhook_carrier_path"']],
    ['psd_webhook_carrier_status: unknown state', $R, "location /w { $CW psd_webhook_carrier_status D lost; }",
        ['invalid delivery state "lost" in "psd_webhook_carrier_status"']],
    ['psd_webhook_carrier_status: a status twice', $R, "location /w { $CW psd_webhook_carrier_status D delivered; psd_webhook_carrier_status d returned; }",
        ['duplicate carrier status "d" in "psd_webhook_carrier_status"']],
    ['psd_webhook_carrier_status: 65 bytes', $R, "location /w { $CW psd_webhook_carrier_status " . ('s' x 65) . ' shipped; }',
        ['"' . ('s' x 65) . '"', '"psd_webhook_carrier_status"']],
    ['psd_webhook_carrier_name: a colon', $R, "location /w { $CW psd_webhook_carrier_name ups:1; }",
        ['invalid carrier name "ups:1" in "psd_webhook_carrier_name"']],
    ['psd_webhook_signature twice', $R, "location /w { $CW psd_webhook_signature hmac-sha256 X-Sig; }",
        ['"psd_webhook_signature" directive is duplicate']],
    ['psd_webhook_signature md5', $R, 'location /w { psd_webhook_signature md5 X-Sig; }',
        ['invalid value "md5" in "psd_webhook_signature"']],
    ['psd_webhook_signature: bad header name', $R, 'location /w { psd_webhook_signature hmac-sha256 "X Sig"; }',
        ['invalid header name "X Sig" in "psd_webhook_signature"']],
    ['psd_webhook_signature: base32', $R, 'location /w { psd_webhook_signature hmac-sha256 X-Sig base32; }',
        ['invalid parameter "base32" in "psd_webhook_signature"']],
    ['psd_webhook_signature: empty prefix=', $R, 'location /w { psd_webhook_signature hmac-sha256 X-Sig hex prefix=; }',
        ['invalid parameter "prefix=" in "psd_webhook_signature"']],
    ['psd_webhook_signature: shared with an encoding', $R, 'location /w { psd_webhook_signature shared X-Token hex; }',
        ['invalid value "shared" in "psd_webhook_signature"']],
    # tickets
    ['psd_ticket_rule: unknown field', $R, 'location = /t { psd_ticket on; psd_ticket_rule billing "category == billing and catgory == x"; }',
        ['invalid triage rule "billing": unknown field "catgory" at column 25']],
    ['psd_ticket_rule: ends early', "$R psd_ticket_rule late \"category == billing and\";", 'location = /t { psd_ticket on; }',
        ['invalid triage rule "late": expected a field at column 24']],
    ['psd_ticket_rule: unknown order state', $R, 'psd_ticket_rule st "order_state == payed"; location = /t { psd_ticket on; }',
        ['invalid triage rule "st": unknown order state "payed" at column 16']],
    ['psd_ticket_rule: priority=extreme', $R, 'psd_ticket_rule p "*" priority=extreme; location = /t { psd_ticket on; }',
        ['invalid parameter "priority=extreme" in triage rule "p"']],
    ['psd_ticket_rule: bad queue name', $R, 'psd_ticket_rule q "*" queue=a/b; location = /t { psd_ticket on; }',
        ['"queue=a/b"', 'triage rule "q"']],
    ['psd_ticket_rule: first_response=soon', $R, 'psd_ticket_rule f "*" first_response=soon; location = /t { psd_ticket on; }',
        ['invalid parameter "first_response=soon" in triage rule "f"']],
    ['psd_ticket_answer: unknown selector', $R, 'psd_ticket_answer colour=red "no"; location = /t { psd_ticket on; }',
        ['invalid answer "colour=red"']],
    ['psd_ticket_max_message abc', $R, 'psd_ticket_max_message abc; location = /t { psd_ticket on; }',
        ['"psd_ticket_max_message" directive invalid value']],
    ['psd_ticket_stream_maxlen abc', $R, 'psd_ticket_stream_maxlen abc; location = /t { psd_ticket on; }',
        ['"psd_ticket_stream_maxlen" directive invalid number']],
    ['psd_ticket_stream_maxlen 5 (below 100)', $R, 'psd_ticket_stream_maxlen 5; location = /t { psd_ticket on; }',
        ['"psd_ticket_stream_maxlen"', '"5"']],
    ['psd_ticket maybe', $R, 'location = /t { psd_ticket maybe; }',
        ['invalid value "maybe" in "psd_ticket" directive']],
    ['psd_ticket_admin without psd_ticket_api_key', $R, 'location = /ta { psd_ticket_admin; }',
        ['"psd_ticket_admin" needs "psd_ticket_api_key"']],
    ['psd_limit_zone: burst beyond 64 bits', "$R psd_limit_zone z key=\$arg_k rate=1r/s burst=99999999999999999999999;", '',
        ['"burst=99999999999999999999999"']],
    ['psd_redis: db beyond 64 bits', 'psd_redis main 127.0.0.1:6379 db=99999999999999999999999;', '',
        ['"db=99999999999999999999999"']],
    ['psd_redis: timeout beyond range', 'psd_redis main 127.0.0.1:6379 timeout=99999999999999d;', '',
        ['"timeout=99999999999999d"']],
    ['fraud rule: threshold beyond 64 bits', $R, 'psd_fraud_rule big "count() by $a over 1h > 99999999999999999999999" block;',
        ['invalid fraud rule "big"']],
    ['fraud rule: window 0s', $R, 'psd_fraud_rule zero "count() by $a over 0s > 1" block;',
        ['invalid fraud rule "zero"']],
    ['fraud rule: distinct without a variable', $R, 'psd_fraud_rule d "distinct() by $a over 1h > 1" block;',
        ['invalid fraud rule "d"']],
    ['fraud rule: key not a variable', $R, 'psd_fraud_rule k "count() by remote_addr over 1h > 1" block;',
        ['invalid fraud rule "k"']],
    ['fraud rule: trailing garbage', $R, 'psd_fraud_rule t "count() by $a over 1h > 1 and more" block;',
        ['invalid fraud rule "t"']],
    ['psd_link_key: file of 2000 bytes', "psd_link_key k1 $K/long;", '',
        ['keys/long"']],
    ['psd_link_skew abc', $LK, 'psd_link_skew abc;',
        ['"psd_link_skew" directive invalid value']],
    ['psd_vault_ttl 0', "$VK psd_vault_ttl 0;", '',
        ['"psd_vault_ttl"']],
    ['psd_vault_cvv_ttl 0', "$VK psd_vault_cvv_ttl 0;", '',
        ['"psd_vault_cvv_ttl"']],
    ['psd_checkout_session_ttl 0', "$R $VK", "psd_checkout_session_ttl 0; $CS",
        ['"psd_checkout_session_ttl"']],
    ['psd_idempotency_ttl 0', "$R $VK", "psd_idempotency_ttl 0; $CS",
        ['"psd_idempotency_ttl"']],
    ['psd_idempotency_lock 0', "$R $VK", "psd_idempotency_lock 0; $CS",
        ['"psd_idempotency_lock"']],
    ['psd_webhook_dedupe 0', $R, "location /w { $WH psd_webhook_dedupe 0; }",
        ['"psd_webhook_dedupe"']],
    ['psd_counter ttl=0', $R, 'location /n { psd_counter k ttl=0; }',
        ['"ttl=0"']],
    ['psd_limit_zone: local_size=0', "$R psd_limit_zone z key=\$arg_k rate=1r/s local_size=0;", '',
        ['"local_size=0"']],
    ['psd_webhook_order_path: leading dot', $R, "location /w { $WH psd_webhook_order_path .data; }",
        ['".data"', '"psd_webhook_order_path"']],
    ['psd_webhook_event: missing kind', $R, "location /w { $WH psd_webhook_event charge.succeeded; }",
        ['"psd_webhook_event"']],
    ['psd_ticket_answer: no text', $R, 'psd_ticket_answer category=billing; location = /t { psd_ticket on; }',
        ['"psd_ticket_answer"']],
    ['psd_ticket_answer: unknown order state', $R, 'psd_ticket_answer order_state=payed "x"; location = /t { psd_ticket on; }',
        ['"payed"']],
    ['psd_ticket_order_proof: not a path', $R, 'location = /t { psd_ticket on; psd_ticket_order_proof orders; }',
        ['invalid order status path "orders"', '"psd_ticket_order_proof"']],
    # other
    ['psd_metrics xml', '', 'location /m { psd_metrics xml; }',
        ['invalid format "xml" in "psd_metrics" directive']],
    ['psd_counter ttl=abc', $R, 'location /n { psd_counter k ttl=abc; }',
        ['invalid parameter "ttl=abc" in "psd_counter"']],
    ['psd_order_status: unknown view', $R, "location /o { psd_order_status admin; psd_order_api_key $K/api; }",
        ['invalid value "admin"']],
    # customer satisfaction
    ['psd_ticket_rating_link: prefix without a final /', "$R $LK", 'psd_ticket_rating_link https://shop.example/rate;',
        ['invalid rating link prefix "https://shop.example/rate" in "psd_ticket_rating_link"']],
    ['psd_ticket_rating_link: ttl=0', "$R $LK", 'psd_ticket_rating_link /rate/ ttl=0;',
        ['invalid parameter "ttl=0" in "psd_ticket_rating_link"']],
    ['psd_ticket_rating_link: unknown key', "$R $LK", "location /ta { psd_ticket_admin; psd_ticket_api_key $K/api; psd_ticket_rating_link /rate/ key=k9; }",
        ['unknown link key "k9" for rating links']],
    ['psd_ticket_rating without psd_link_key', $R, 'location /rate/ { psd_ticket_rating on; }',
        ['rating links need at least one "psd_link_key"']],
    ['psd_ticket_rating maybe', "$R $LK", 'location /rate/ { psd_ticket_rating maybe; }',
        ['invalid value "maybe" in "psd_ticket_rating" directive']],
    # reconciliation
    ['psd_reconcile without psd_reconcile_api_key', $R, 'location /r { psd_reconcile on; }',
        ['"psd_reconcile" needs "psd_reconcile_api_key"']],
    ['psd_reconcile maybe', $R, "location /r { psd_reconcile maybe; psd_reconcile_api_key $K/api; }",
        ['invalid value "maybe" in "psd_reconcile" directive']],
    ['psd_reconcile at server level', $R, 'psd_reconcile on;',
        ['"psd_reconcile" directive is not allowed here']],
    ['psd_reconcile_api_key: short file', $R, "location /r { psd_reconcile on; psd_reconcile_api_key $K/api-short; }",
        ['api-short']],
    ['psd_reconcile_page_size 0', $R, "psd_reconcile_page_size 0;",
        ['"psd_reconcile_page_size"', '"0"']],
    ['psd_reconcile_page_size 5001', $R, "psd_reconcile_page_size 5001;",
        ['"psd_reconcile_page_size"', '"5001"']],
    ['psd_reconcile_page_size abc', $R, "psd_reconcile_page_size abc;",
        ['"psd_reconcile_page_size" directive invalid number']],
    ['psd_reconcile_page_size beyond max_pending', 'psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_pending=500;',
        "location /r { psd_reconcile on; psd_reconcile_api_key $K/api; psd_reconcile_page_size 300; }",
        ['"psd_reconcile_page_size" 300 needs "max_pending=" of at least 600 on redis server "main"']],
    ['psd_reconcile_index_ttl 1h (below 1d)', $R, "psd_reconcile_index_ttl 1h;",
        ['"psd_reconcile_index_ttl"', '"1h"']],
    ['psd_reconcile_index_ttl 11y', $R, "psd_reconcile_index_ttl 11y;",
        ['"psd_reconcile_index_ttl"', '"11y"']],
    ['psd_reconcile_index_ttl abc', $R, "psd_reconcile_index_ttl abc;",
        ['"psd_reconcile_index_ttl" directive invalid value']],
    ['psd_reconcile_redis: unknown server', $R, "location /r { psd_reconcile on; psd_reconcile_api_key $K/api; psd_reconcile_redis nosuch; }",
        ['unknown redis server "nosuch"']],
);

# ---------------------------------------------------------------------------
# (b) requests: [name, raw request, status, error code, field]; the field,
# when given, must appear in the JSON "field" member
# ---------------------------------------------------------------------------

sub raw {
    my ($method, $uri, $body, @h) = @_;
    my $r = "$method $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . join('', map { "$_\r\n" } @h);
    $r .= 'Content-Length: ' . length($body) . "\r\n" if defined $body;
    return "$r\r\n" . ($body // '');
}
sub get { raw('GET', $_[0]) }
sub chunked {       # chunked($uri, $body, @headers): a chunked POST
    my ($uri, $body, @h) = @_;
    raw('POST', $uri, undef, 'Transfer-Encoding: chunked', @h)
        . join('', map { sprintf("%x\r\n%s\r\n", length, $_) } unpack '(a1000)*', $body) . "0\r\n\r\n";
}
sub jpost { my ($uri, $body, @h) = @_; raw('POST', $uri, $body, 'Content-Type: application/json', @h) }
sub apost { my ($uri, $body, @h) = @_; jpost($uri, $body, "Authorization: Bearer $API_KEY", @h) }

# links: a good link for /dl/a.txt, then broken copies of it
my $good = sign_link(path => '/dl/a.txt', kid => 'k1', exp => $NOW + 600);
my $sig = link_arg($good, 'psd_sig');
my $flip = substr($sig, 0, 5) . (substr($sig, 5, 1) eq 'A' ? 'B' : 'A') . substr($sig, 6);
(my $other = $good) =~ s{^/dl/a\.txt}{/dl/b.txt};
my $prefix = sign_link(path => '/dl/p/', prefix => 1, kid => 'k1', exp => $NOW + 600);
(my $outside = $prefix) =~ s{^/dl/p/}{/dl/b.txt};

$REQ{link} = [
    ['no psd_* arguments', get('/dl/a.txt'), 403, 'link_malformed'],
    ['psd_sig missing', get(link_del($good, 'psd_sig')), 403, 'link_malformed'],
    ['psd_exp missing', get(link_del($good, 'psd_exp')), 403, 'link_malformed'],
    ['psd_id missing', get(link_del($good, 'psd_id')), 403, 'link_malformed'],
    ['psd_exp twice', get("$good&psd_exp=" . ($NOW + 600)), 403, 'link_malformed'],
    ['unknown psd_ argument', get("$good&psd_foo=1"), 403, 'link_malformed'],
    ['psd_v=2', get(link_set($good, 'psd_v', 2)), 403, 'link_malformed'],
    ['psd_exp not a number', get(link_set($good, 'psd_exp', '12ab')), 403, 'link_malformed'],
    ['psd_exp negative', get(link_set($good, 'psd_exp', '-5')), 403, 'link_malformed'],
    ['psd_sig empty', get(link_set($good, 'psd_sig', '')), 403, 'link_malformed'],
    ['psd_sig not base64url', get(link_set($good, 'psd_sig', '!!!' . substr($sig, 3))), 403, 'link_malformed'],
    ['psd_sig truncated', get(link_set($good, 'psd_sig', substr($sig, 0, 20))), 403, 'link_malformed'],
    ['psd_sig one character changed', get(link_set($good, 'psd_sig', $flip)), 403, 'link_invalid'],
    ['signed for another path', get($other), 403, 'link_invalid'],
    ['psd_exp moved later', get(link_set($good, 'psd_exp', $NOW + 700)), 403, 'link_invalid'],
    ['psd_id changed', get(link_set($good, 'psd_id', 'forged0000000000000000')), 403, 'link_invalid'],
    ['psd_limit added', get(link_set($good, 'psd_sig', 'x') =~ s/&psd_sig=x/&psd_limit=5&psd_sig=$sig/r), 403, 'link_invalid'],
    ['signed with another key', get(sign_link(path => '/dl/a.txt', kid => 'k1', key => 'k' x 32)), 403, 'link_invalid'],
    ['unknown key id', get(sign_link(path => '/dl/a.txt', kid => 'k9', key => 'k' x 32)), 403, 'link_unknown_key'],
    ['psd_exp beyond 64 bits', get(link_set($good, 'psd_exp', '99999999999999999999999')), 403, 'link_malformed'],
    ['expired', get(sign_link(path => '/dl/a.txt', kid => 'k1', exp => $NOW - 100)), 410, 'link_expired'],
    ['expiry beyond max_ttl', get(sign_link(path => '/dl/a.txt', kid => 'k1', exp => $NOW + 10 * 86400)), 403, 'link_invalid'],
    ['prefix link outside its prefix', get($outside), 403, 'link_wrong_path'],
    ['bound to another client', get(sign_link(path => '/dl/a.txt', kid => 'k1', ip => '10.0.0.0/8')), 403, 'link_wrong_client'],
    ['psd_ip added unsigned', get(link_set($good, 'psd_sig', 'x') =~ s/&psd_sig=x/&psd_ip=127.0.0.1&psd_sig=$sig/r), 403, 'link_invalid'],
    ['psd_order added unsigned', get(link_set($good, 'psd_sig', 'x') =~ s/&psd_sig=x/&psd_order=o1&psd_sig=$sig/r), 403, 'link_invalid'],
    ['psd_kid changed to another known key', get(link_set($good, 'psd_kid', 'k2')), 403, 'link_invalid'],
    ['order status: tampered link', get(link_set(sign_link(path => '/orders/status', kid => 'k1', order => 'ord_7'), 'psd_order', 'ord_8')), 403, 'link_invalid'],
    ['order status: expired link', get(sign_link(path => '/orders/status', kid => 'k1', order => 'ord_7', exp => $NOW - 100)), 410, 'link_expired'],
    ['revoked link', get(sign_link(path => '/dl/a.txt', kid => 'k1', id => 'revokedlink')), 410, 'link_revoked'],
];

my $ISSUE = '/api/issue';
$REQ{link_api} = [
    ['issue: GET', raw('GET', $ISSUE, undef, "Authorization: Bearer $API_KEY"), 405, 'method_not_allowed'],
    ['issue: no Authorization', jpost($ISSUE, '{"path":"/dl/a.txt","ttl":60}'), 401, 'unauthorized'],
    ['issue: wrong bearer key', jpost($ISSUE, '{"path":"/dl/a.txt","ttl":60}', 'Authorization: Bearer wrong-key-0000000000'), 401, 'unauthorized'],
    ['issue: Basic scheme', jpost($ISSUE, '{"path":"/dl/a.txt","ttl":60}', "Authorization: Basic $API_KEY"), 401, 'unauthorized'],
    ['issue: key as a prefix', jpost($ISSUE, '{"path":"/dl/a.txt","ttl":60}', 'Authorization: Bearer ' . substr($API_KEY, 0, 10)), 401, 'unauthorized'],
    ['issue: invalid JSON', apost($ISSUE, '{"path":"/dl/a.txt",'), 400, 'invalid_json'],
    ['issue: not an object', apost($ISSUE, '["/dl/a.txt",60]'), 400, 'invalid_json'],
    ['issue: empty body', apost($ISSUE, ''), 400, 'invalid_json'],
    ['issue: ttl missing', apost($ISSUE, '{"path":"/dl/a.txt"}'), 400, 'invalid_field', 'ttl'],
    ['issue: ttl a string', apost($ISSUE, '{"path":"/dl/a.txt","ttl":"60"}'), 400, 'invalid_field', 'ttl'],
    ['issue: ttl negative', apost($ISSUE, '{"path":"/dl/a.txt","ttl":-60}'), 400, 'invalid_field', 'ttl'],
    ['issue: ttl a fraction', apost($ISSUE, '{"path":"/dl/a.txt","ttl":60.5}'), 400, 'invalid_field', 'ttl'],
    ['issue: duplicate member', apost($ISSUE, '{"path":"/dl/a.txt","ttl":60,"ttl":70}'), 400, 'invalid_json'],
    ['issue: ttl 0', apost($ISSUE, '{"path":"/dl/a.txt","ttl":0}'), 400, 'invalid_field', 'ttl'],
    ['issue: ttl too long', apost($ISSUE, '{"path":"/dl/a.txt","ttl":999999999}'), 400, 'ttl_too_long'],
    ['issue: limit 0', apost($ISSUE, '{"path":"/dl/a.txt","ttl":60,"limit":0}'), 400, 'invalid_field', 'limit'],
    ['issue: limit too big', apost($ISSUE, '{"path":"/dl/a.txt","ttl":60,"limit":1000001}'), 400, 'invalid_field', 'limit'],
    ['issue: ip not an address', apost($ISSUE, '{"path":"/dl/a.txt","ttl":60,"ip":"10.0.0.300"}'), 400, 'invalid_field', 'ip'],
    ['issue: relative path', apost($ISSUE, '{"path":"dl/a.txt","ttl":60}'), 400, 'invalid_field', 'path'],
    ['issue: path and prefix', apost($ISSUE, '{"path":"/dl/a.txt","prefix":"/dl/","ttl":60}'), 400, 'invalid_field'],
    ['issue: neither path nor prefix', apost($ISSUE, '{"ttl":60}'), 400, 'invalid_field'],
    ['issue: chunked body over 16 KiB', chunked($ISSUE, '{"path":"/dl/a.txt","ttl":60,"order":"' . ('o' x 17000) . '"}', "Authorization: Bearer $API_KEY", 'Content-Type: application/json'), 413, 'body_too_large'],
    ['issue: body over 16 KiB', apost($ISSUE, '{"path":"/dl/a.txt","ttl":60,"order":"' . ('o' x 17000) . '"}'), 413, 'body_too_large'],
    ['revoke: no Authorization', jpost('/api/revoke', '{"link":"abc"}'), 401, 'unauthorized'],
    ['revoke: GET', raw('GET', '/api/revoke', undef, "Authorization: Bearer $API_KEY"), 405, 'method_not_allowed'],
    ['revoke: invalid JSON', apost('/api/revoke', '{"link":'), 400, 'invalid_json'],
    ['revoke: neither link nor order', apost('/api/revoke', '{}'), 400, 'invalid_field'],
    ['revoke: link a number', apost('/api/revoke', '{"link":42}'), 400, 'invalid_field', 'link'],
];

$REQ{fraud_admin} = [
    ['fraud admin: no Authorization', jpost('/fa', '{"event":"payment_failed","keys":{"remote_addr":"192.0.2.7"}}'), 401, 'unauthorized'],
    ['fraud admin: wrong key', jpost('/fa', '{"event":"payment_failed","keys":{"remote_addr":"192.0.2.7"}}', 'Authorization: Bearer nope-nope-nope-nope'), 401, 'unauthorized'],
    ['fraud admin: GET', raw('GET', '/fa', undef, "Authorization: Bearer $API_KEY"), 405, 'method_not_allowed'],
    ['fraud admin: invalid JSON', apost('/fa', '{"event":'), 400, 'invalid_json'],
    ['fraud admin: unknown event', apost('/fa', '{"event":"payment_exploded","keys":{"remote_addr":"192.0.2.7"}}'), 400, 'invalid_field'],
    ['fraud admin: keys not an object', apost('/fa', '{"event":"payment_failed","keys":"192.0.2.7"}'), 400, 'invalid_field'],
    ['fraud admin: unknown block list', apost('/fa', '{"blocklist":"phone","add":"555"}'), 400, 'invalid_field'],
    ['fraud admin: bad network', apost('/fa', '{"blocklist":"ip","add":"300.1.2.0/24"}'), 400, 'invalid_field'],
    ['fraud admin: body over 64 KiB', apost('/fa', '{"event":"payment_failed","keys":{"remote_addr":"' . ('1' x 70000) . '"}}'), 413, 'body_too_large'],
    ['fraud admin: neither event nor blocklist', apost('/fa', '{"hello":1}'), 400, 'invalid_field'],
];

my $CARD = '{"card":{"number":"%s","cvc":"%s","exp":"%s"}}';
sub card { sprintf $CARD, $_[0] // '4242424242424242', $_[1] // '123', $_[2] // '12/39' }
sub form { raw('POST', $_[0], $_[1], 'Content-Type: application/x-www-form-urlencoded') }
$REQ{checkout} = [
    ['checkout: invalid JSON', jpost('/checkout', '{"card":{"number":"4242424242424242"'), 400, 'invalid_json'],
    ['checkout: top-level array', jpost('/checkout', '[1,2]'), 400, 'not_an_object'],
    ['checkout: duplicate key', jpost('/checkout', '{"card":{"number":"4242424242424242","number":"4000056655665556"}}'), 400, 'duplicate_key'],
    ['checkout: invalid UTF-8', jpost('/checkout', "{\"name\":\"\xff\xfe\",\"card\":{\"number\":\"4242424242424242\"}}"), 400, 'invalid_utf8'],
    ['checkout: nested too deep', jpost('/checkout', ('[' x 300) . (']' x 300) =~ s/^\[/{"a":[/r =~ s/\]$/]}/r), 400, 'too_deep'],
    ['checkout: number a JSON boolean', jpost('/checkout', '{"card":{"number":true}}'), 400, 'invalid_field_type', 'card.number'],
    ['checkout: number an object', jpost('/checkout', '{"card":{"number":{"d":"4242424242424242"}}}'), 400, 'invalid_field_type', 'card.number'],
    ['checkout: cvc an array', jpost('/checkout', '{"card":{"number":"4242424242424242","cvc":["123"]}}'), 400, 'invalid_field_type', 'card.cvc'],
    ['checkout: card is a string', jpost('/checkout', '{"card":"4242424242424242"}'), 422, 'unexpected_card_number'],
    ['checkout: non-Luhn PAN', jpost('/checkout', card('4242424242424241')), 422, 'luhn_failed'],
    ['checkout: PAN too short', jpost('/checkout', card('4242')), 422, 'invalid_card_number'],
    ['checkout: PAN with letters', jpost('/checkout', card('4242abcd42424242')), 422, 'invalid_card_number'],
    ['checkout: CVV with a letter', jpost('/checkout', card(undef, '12a')), 422, 'invalid_cvv'],
    ['checkout: CVV of 6 digits', jpost('/checkout', card(undef, '123456')), 422, 'invalid_cvv'],
    ['checkout: expiry month 13', jpost('/checkout', card(undef, undef, '13/39')), 422, 'invalid_expiry'],
    ['checkout: expired card', jpost('/checkout', card(undef, undef, '01/20')), 422, 'card_expired'],
    ['checkout: card number elsewhere', jpost('/checkout', '{"note":"4000056655665556","card":{"number":"4242424242424242"}}'), 422, 'unexpected_card_number'],
    ['checkout: card number in the query', jpost('/checkout?pan=4000056655665556', card()), 422, 'unexpected_card_number'],
    ['checkout: text/plain body', raw('POST', '/checkout', card(), 'Content-Type: text/plain'), 415, 'unsupported_media_type'],
    ['checkout: no content type', raw('POST', '/checkout', card()), 415, 'unsupported_media_type'],
    ['checkout: body over client_body_buffer_size', jpost('/checkout', '{"pad":"' . ('p' x 5000) . '"}'), 413, 'body_too_large'],
    ['checkout: chunked body over client_body_buffer_size', chunked('/checkout', '{"pad":"' . ('p' x 5000) . '"}', 'Content-Type: application/json'), 413, 'body_too_large'],
    ['checkout: PAN of 20 digits', jpost('/checkout', card('42424242424242424242')), 422, 'invalid_card_number'],
    ['checkout: holder of 300 bytes', jpost('/checkout', '{"card":{"number":"4242424242424242","name":"' . ('h' x 300) . '"}}'), 422, 'invalid_holder'],
    ['checkout: empty JSON body', jpost('/checkout', ''), 400, 'empty_body'],
    ['checkout: Idempotency-Key of 256 bytes', jpost('/checkout', card(), 'Idempotency-Key: ' . ('i' x 256)), 400, 'invalid_idempotency_key'],
    ['checkout: Idempotency-Key with a space', jpost('/checkout', card(), 'Idempotency-Key: a b'), 400, 'invalid_idempotency_key'],
    ['reveal: no X-PSD-Reveal-Key', jpost('/gw', '{"source":{"number":"tok_AAAAAAAAAAAAAAAAAAAAAAAA"}}'), 403, 'reveal_denied'],
    ['reveal: wrong X-PSD-Reveal-Key', jpost('/gw', '{"source":{"number":"tok_AAAAAAAAAAAAAAAAAAAAAAAA"}}', 'X-PSD-Reveal-Key: psd-reveal-key-080-0123456789abcdeX'), 403, 'reveal_denied'],
    ['reveal: a card number instead of a token', jpost('/gw', '{"source":{"number":"4242424242424242"}}', "X-PSD-Reveal-Key: $REVEAL"), 422, 'not_a_token'],
    ['reveal: token never issued', jpost('/gw', '{"source":{"number":"tok_AAAAAAAAAAAAAAAAAAAAAAAA"}}', "X-PSD-Reveal-Key: $REVEAL"), 422, 'token_expired'],
    ['reveal: invalid JSON', jpost('/gw', '{"source":', "X-PSD-Reveal-Key: $REVEAL"), 400, 'invalid_json'],
    ['checkout: form with a bad %-escape', form('/checkout', 'card%ZZnumber=4242424242424242'), 400, 'bad_encoding'],
    ['checkout: form with a duplicate field', form('/checkout', 'card[number]=4242424242424242&card.number=4242424242424242'), 400, 'duplicate_field'],
    ['checkout: form with a non-Luhn PAN', form('/checkout', 'card[number]=4242424242424241'), 422, 'luhn_failed'],
];

sub stripe_hdr { my ($t, $body, $secret) = @_; "t=$t,v1=" . hmac_sha256_hex("$t.$body", $secret // $STRIPE) }
sub wh { my ($body, $h) = @_; jpost('/wh', $body, defined $h ? "Stripe-Signature: $h" : ()) }
sub wh2 { my ($body, $h) = @_; jpost('/wh2', $body, "Stripe-Signature: $h") }
my $EVT = '{"id":"evt_bad_1","object":"event","type":"payment_intent.succeeded","created":' . $NOW
    . ',"data":{"object":{"id":"pi_1","amount":100,"currency":"eur","metadata":{"order_id":"ord_1"}}}}';
(my $EVT_NOORDER = $EVT) =~ s/"order_id":"ord_1"//;
(my $EVT_TYPE = $EVT) =~ s/payment_intent\.succeeded/payment_intent.exploded/;
(my $EVT_BADORDER = $EVT) =~ s/"ord_1"/"ord {1}\\n"/;
my $STD = '{"type":"payment.succeeded","data":{"order_id":"ord_2"}}';
$REQ{webhook} = [
    ['stripe: no Stripe-Signature', wh($EVT), 400, 'missing_header'],
    ['stripe: garbled header', wh($EVT, 'garbage'), 400, 'malformed_header'],
    ['stripe: t= without v1=', wh($EVT, "t=$NOW"), 401, 'bad_signature'],
    ['stripe: t not a number', wh($EVT, 't=soon,v1=' . ('0' x 64)), 400, 'malformed_header'],
    ['stripe: v1 not hex', wh($EVT, "t=$NOW,v1=" . ('z' x 64)), 400, 'malformed_header'],
    ['stripe: signature of another body', wh($EVT, stripe_hdr($NOW, "$EVT ")), 401, 'bad_signature'],
    ['stripe: wrong secret', wh($EVT, stripe_hdr($NOW, $EVT, 'whsec_some_other_secret_0000000000000000')), 401, 'bad_signature'],
    ['stripe: truncated signature', wh($EVT, substr(stripe_hdr($NOW, $EVT), 0, -8)), 400, 'malformed_header'],
    ['stripe: timestamp an hour old', wh($EVT, stripe_hdr($NOW - 3600, $EVT)), 401, 'stale_timestamp'],
    ['stripe: timestamp an hour ahead', wh($EVT, stripe_hdr($NOW + 3600, $EVT)), 401, 'stale_timestamp'],
    ['stripe: t beyond 64 bits', wh($EVT, 't=99999999999999999999999,v1=' . ('0' x 64)), 400, 'malformed_header'],
    ['stripe: t negative', wh($EVT, 't=-5,v1=' . ('0' x 64)), 400, 'malformed_header'],
    ['stripe: t twice', wh($EVT, "t=$NOW,t=$NOW,v1=" . ('0' x 64)), 400, 'malformed_header'],
    ['stripe: signed invalid JSON', wh('{"id":', stripe_hdr($NOW, '{"id":')), 400, 'invalid_json'],
    ['stripe: signed empty body', wh('', stripe_hdr($NOW, '')), 400, 'empty_body'],
    ['stripe: signed unknown event type', wh2($EVT_TYPE, stripe_hdr($NOW, $EVT_TYPE)), 400, 'unknown_event'],
    ['stripe: signed event without order', wh2($EVT_NOORDER, stripe_hdr($NOW, $EVT_NOORDER)), 400, 'missing_order'],
    ['stripe: signed event with a bad order id', wh2($EVT_BADORDER, stripe_hdr($NOW, $EVT_BADORDER)), 400, 'invalid_order'],
    ['stripe: body over client_body_buffer_size', wh('{"pad":"' . ('p' x 5000) . '"}', stripe_hdr($NOW, 'x')), 413, 'body_too_large'],
    ['stripe: chunked body over client_body_buffer_size', chunked('/wh', '{"pad":"' . ('p' x 5000) . '"}', 'Content-Type: application/json', 'Stripe-Signature: ' . stripe_hdr($NOW, 'x')), 413, 'body_too_large'],
    ['standard: no webhook-id', jpost('/std', $STD, "webhook-timestamp: $NOW", 'webhook-signature: v1,AAAA'), 400, 'missing_header'],
    ['standard: no webhook-signature', jpost('/std', $STD, 'webhook-id: msg_1', "webhook-timestamp: $NOW"), 400, 'missing_header'],
    ['standard: timestamp not a number', jpost('/std', $STD, 'webhook-id: msg_1', 'webhook-timestamp: now', 'webhook-signature: v1,AAAA'), 400, 'malformed_header'],
    ['standard: signature not base64', jpost('/std', $STD, 'webhook-id: msg_1', "webhook-timestamp: $NOW", 'webhook-signature: v1,!!!not-base64!!!'), 400, 'malformed_header'],
    ['standard: stale timestamp', jpost('/std', $STD, 'webhook-id: msg_1', 'webhook-timestamp: ' . ($NOW - 3600), 'webhook-signature: v1,' . ('A' x 43) . '='), 401, 'stale_timestamp'],
    ['standard: wrong signature', jpost('/std', $STD, 'webhook-id: msg_1', "webhook-timestamp: $NOW", 'webhook-signature: v1,' . ('A' x 43) . '='), 401, 'bad_signature'],
];

# carrier webhooks: /cw takes a shared secret, /ch an HMAC (hex, "sha256=")
sub cev { my %f = (id => '"evt_c1"', order_ref => '"ord_c1"', tracking => '"T1"', event => '"delivered"',
                   at => '"2026-03-01T09:30:00Z"', @_);
    '{' . join(',', map { "\"$_\":$f{$_}" } grep { defined $f{$_} } sort keys %f) . '}' }
sub cwt { jpost('/cw', $_[0], "X-Carrier-Token: $STRIPE") }
sub chm { my ($body, $h) = @_; jpost('/ch', $body, defined $h ? "X-Sig: $h" : ()) }
sub chs { chm($_[0], 'sha256=' . hmac_sha256_hex($_[0], $STRIPE)) }
my $CEV = cev();
$REQ{carrier} = [
    ['carrier: GET', get('/cw'), 405, 'method_not_allowed'],
    ['carrier: no shared secret header', jpost('/cw', $CEV), 400, 'missing_header'],
    ['carrier: wrong shared secret', jpost('/cw', $CEV, 'X-Carrier-Token: nope'), 401, 'bad_signature'],
    ['carrier: no HMAC header', chm($CEV), 400, 'missing_header'],
    ['carrier: HMAC without its prefix', chm($CEV, hmac_sha256_hex($CEV, $STRIPE)), 400, 'malformed_header'],
    ['carrier: HMAC not hex', chm($CEV, 'sha256=' . ('x' x 64)), 400, 'malformed_header'],
    ['carrier: HMAC of another body', chm($CEV, 'sha256=' . hmac_sha256_hex("$CEV ", $STRIPE)), 401, 'bad_signature'],
    ['carrier: empty body', cwt(''), 400, 'empty_body'],
    ['carrier: invalid JSON', cwt('{"order_ref":'), 400, 'invalid_json'],
    ['carrier: not an object', cwt('["ord_c1"]'), 400, 'invalid_json'],
    ['carrier: no order', cwt(cev(order_ref => undef)), 400, 'missing_order'],
    ['carrier: order with a space', cwt(cev(order_ref => '"ord c1"')), 400, 'invalid_order'],
    ['carrier: order of 65 characters', cwt(cev(order_ref => '"' . ('o' x 65) . '"')), 400, 'invalid_order'],
    ['carrier: tracking of 65 characters', cwt(cev(tracking => '"' . ('t' x 65) . '"')), 400, 'invalid_tracking'],
    ['carrier: no status', cwt(cev(event => undef)), 400, 'missing_status'],
    ['carrier: status an object', cwt(cev(event => '{"code":"D"}')), 400, 'invalid_status'],
    ['carrier: no time', cwt(cev(at => undef)), 400, 'missing_time'],
    ['carrier: time without a zone', cwt(cev(at => '"2026-03-01T09:30:00"')), 400, 'invalid_time'],
    ['carrier: time in milliseconds', cwt(cev(at => '1772357400000')), 400, 'invalid_time'],
    ['carrier: no event id', chs(cev(id => undef)), 400, 'missing_event_id'],
    ['carrier: event id with a space', chs(cev(id => '"evt c1"')), 400, 'invalid_event_id'],
    ['carrier: body over client_body_buffer_size', cwt('{"pad":"' . ('p' x 5000) . '"}'), 413, 'body_too_large'],
    ['carrier: chunked body over client_body_buffer_size', chunked('/cw', '{"pad":"' . ('p' x 5000) . '"}', 'Content-Type: application/json', "X-Carrier-Token: $STRIPE"), 413, 'body_too_large'],
];

my $TK = '{"email":"ann@example.org","subject":"Hello","message":"Where is my download?"}';
sub tk { my %f = (email => '"ann@example.org"', subject => '"Hello"', message => '"Where is my download?"', @_);
    '{' . join(',', map { "\"$_\":$f{$_}" } grep { defined $f{$_} } sort keys %f) . '}' }
$REQ{ticket} = [
    ['ticket: GET', get('/t'), 405, 'method_not_allowed'],
    ['ticket: invalid JSON', jpost('/t', '{"email":'), 400, 'invalid_json'],
    ['ticket: not an object', jpost('/t', '"hello"'), 400, 'invalid_json'],
    ['ticket: email missing', jpost('/t', tk(email => undef)), 400, 'invalid_field', 'email'],
    ['ticket: email without @', jpost('/t', tk(email => '"ann.example.org"')), 400, 'invalid_email'],
    ['ticket: email a number', jpost('/t', tk(email => 42)), 400, 'invalid_field', 'email'],
    ['ticket: subject missing', jpost('/t', tk(subject => undef)), 400, 'invalid_field', 'subject'],
    ['ticket: subject of 201 bytes', jpost('/t', tk(subject => '"' . ('s' x 201) . '"')), 400, 'invalid_field', 'subject'],
    ['ticket: message missing', jpost('/t', tk(message => undef)), 400, 'invalid_field', 'message'],
    ['ticket: message over psd_ticket_max_message', jpost('/t', tk(message => '"' . ('m' x 600) . '"')), 400, 'invalid_field', 'message'],
    ['ticket: message not UTF-8', jpost('/t', tk(message => "\"caf\xe9\"")), 400, 'invalid_json'],
    ['ticket: category with a space', jpost('/t', tk(category => '"bil ling"')), 400, 'invalid_field', 'category'],
    ['ticket: order_id with a slash', jpost('/t', tk(order_id => '"ord/1"')), 400, 'invalid_field', 'order_id'],
    ['ticket: card number in the message', jpost('/t', tk(message => '"my card 4242 4242 4242 4242"')), 422, 'card_number_in_ticket'],
    ['ticket: body over 64 KiB', jpost('/t', tk(message => '"' . ('m' x 70000) . '"')), 413, 'body_too_large'],
    ['ticket: chunked body over 64 KiB', chunked('/t', tk(message => '"' . ('m' x 70000) . '"'), 'Content-Type: application/json'), 413, 'body_too_large'],
    ['ticket: order_link of another order', jpost('/tp', tk(order_id => '"ord_1"', order_link => '"' . sign_link(path => '/orders/status', order => 'ord_2') . '"')), 403, 'link_invalid', 'order_link'],
    ['ticket: order_link forged', jpost('/tp', tk(order_id => '"ord_1"', order_link => '"' . sign_link(path => '/orders/status', order => 'ord_1', key => 'z' x 32) . '"')), 403, 'link_invalid', 'order_link'],
    ['ticket: order_link expired', jpost('/tp', tk(order_id => '"ord_1"', order_link => '"' . sign_link(path => '/orders/status', order => 'ord_1', exp => time - 60) . '"')), 410, 'link_expired', 'order_link'],
    ['ticket: order_link a number', jpost('/tp', tk(order_id => '"ord_1"', order_link => '7')), 400, 'invalid_field', 'order_link'],
    ['ticket admin: no Authorization', jpost('/ta', '{"ticket":"general.1","state":"resolved"}'), 401, 'unauthorized'],
    ['ticket admin: bad state', apost('/ta', '{"ticket":"general.1","state":"closed"}'), 400, 'invalid_field', 'state'],
    ['ticket admin: ticket missing', apost('/ta', '{"state":"resolved"}'), 400, 'invalid_field', 'ticket'],
    ['ticket admin: PUT', raw('PUT', '/ta', '', "Authorization: Bearer $API_KEY"), 405, 'method_not_allowed'],
    ['ticket admin: GET without ?ticket=', raw('GET', '/ta', undef, "Authorization: Bearer $API_KEY"), 400, 'invalid_field', 'ticket'],
    ['ticket admin: GET unknown ticket', raw('GET', '/ta?ticket=general.0-0', undef, "Authorization: Bearer $API_KEY"), 404, 'unknown_ticket'],
    ['ticket admin: wrong key', jpost('/ta', '{"ticket":"general.1","state":"resolved"}', 'Authorization: Bearer wrong-key-0000000000'), 401, 'unauthorized'],
    ['ticket admin: invalid JSON', apost('/ta', '{"ticket":'), 400, 'invalid_json'],
    ['ticket admin: unknown ticket', apost('/ta', '{"ticket":"general.0-0","state":"resolved"}'), 404, 'unknown_ticket'],
    ['order status: no Authorization', get('/os?order=ord_1'), 401, 'unauthorized'],
    ['order status: wrong key', raw('GET', '/os?order=ord_1', undef, 'Authorization: Bearer wrong-key-0000000000'), 401, 'unauthorized'],
    ['order status: order id with a space', raw('GET', '/os?order=ord%201', undef, "Authorization: Bearer $API_KEY"), 400, 'invalid_field', 'order'],
    ['order status: unknown order', raw('GET', '/os?order=ord_none', undef, "Authorization: Bearer $API_KEY"), 404, 'unknown_order'],
    ['order status: no order argument', raw('GET', '/os', undef, "Authorization: Bearer $API_KEY"), 400, 'invalid_field', 'order'],
    ['counter: empty key', get('/n'), 400, 'invalid_key'],
];

# rating links (t/071-csat.t): signed under the rating key of k1
my $RK = hmac_sha256("psd-link-purpose-v1\nrating", key_bytes('k1'));
sub rate { sign_link(path => "/rate/$_[0]", key => $RK, exp => $NOW + 600, @_[1 .. $#_]) }
my $rated = rate('general.rated');
my $rsig = link_arg($rated, 'psd_sig');
my $CF = 'Content-Type: application/x-www-form-urlencoded';
$REQ{rating} = [
    ['rating: no link', get('/rate/general.rated?score=3'), 403, 'link_malformed'],
    ['rating: forged signature', get(link_set($rated, 'psd_sig', substr($rsig, 0, 5) . (substr($rsig, 5, 1) eq 'A' ? 'B' : 'A') . substr($rsig, 6)) . '&score=3'), 403, 'link_invalid'],
    ['rating: a download link', get(sign_link(path => '/rate/general.open', exp => $NOW + 600) . '&score=3'), 403, 'link_invalid'],
    ['rating: expired', get(rate('general.open', exp => $NOW - 60) . '&score=3'), 410, 'link_expired'],
    ['rating: unknown key', get(rate('general.open', kid => 'k9') . '&score=3'), 403, 'link_unknown_key'],
    ['rating: score 0', get("$rated&score=0"), 400, 'invalid_field', 'score'],
    ['rating: score 6', get("$rated&score=6"), 400, 'invalid_field', 'score'],
    ['rating: no score', get($rated), 400, 'invalid_field', 'score'],
    ['rating: unknown ticket', get(rate('general.none') . '&score=3'), 404, 'unknown_ticket'],
    ['rating: no ticket in the path', get(rate('x') . '&score=3'), 404, 'unknown_ticket'],
    ['rating: ticket not resolved', get(rate('general.open') . '&score=3'), 409, 'ticket_not_resolved'],
    ['rating: already rated', get("$rated&score=3"), 409, 'already_rated'],
    ['rating: comment of 2001 bytes', jpost($rated, '{"score":3,"comment":"' . ('c' x 2001) . '"}'), 400, 'invalid_field', 'comment'],
    ['rating: card number in the comment', jpost($rated, '{"score":3,"comment":"4242 4242 4242 4242"}'), 422, 'card_number_in_comment', 'comment'],
    ['rating: control character in the comment', raw('POST', $rated, "score=3&comment=a%07b", $CF), 400, 'invalid_field', 'comment'],
    ['rating: comment not a string', jpost($rated, '{"score":3,"comment":7}'), 400, 'invalid_field', 'comment'],
    ['rating: invalid JSON', jpost($rated, '{"score":'), 400, 'invalid_json'],
    ['rating: body over 16 KiB', jpost($rated, '{"score":3,"comment":"' . ('c' x 17000) . '"}'), 413, 'body_too_large'],
    ['rating: PUT', raw('PUT', "$rated&score=3", ''), 405, 'method_not_allowed'],
];
my $RQ = 'from=2026-01-01&to=2026-01-31';
sub rget { raw('GET', "/r?$_[0]", undef, "Authorization: Bearer $API_KEY") }
$REQ{reconcile} = [
    ['reconcile: no Authorization', get("/r?$RQ"), 401, 'unauthorized'],
    ['reconcile: wrong key', raw('GET', "/r?$RQ", undef, 'Authorization: Bearer wrong-key-0000000000'), 401, 'unauthorized'],
    ['reconcile: POST', apost("/r?$RQ", '{}'), 405, 'method_not_allowed'],
    ['reconcile: no from', rget('to=2026-01-31'), 400, 'invalid_field', 'from'],
    ['reconcile: from 2026-02-30', rget('from=2026-02-30&to=2026-03-01'), 400, 'invalid_field', 'from'],
    ['reconcile: from in another form', rget('from=01/01/2026&to=2026-01-31'), 400, 'invalid_field', 'from'],
    ['reconcile: no to', rget('from=2026-01-01'), 400, 'invalid_field', 'to'],
    ['reconcile: to with a time', rget('from=2026-01-01&to=2026-01-31T00:00:00Z'), 400, 'invalid_field', 'to'],
    ['reconcile: to before from', rget('from=2026-01-31&to=2026-01-01'), 400, 'invalid_range'],
    ['reconcile: 93 days', rget('from=2026-01-01&to=2026-04-03'), 400, 'range_too_long'],
    ['reconcile: format=xlsx', rget("$RQ&format=xlsx"), 400, 'invalid_field', 'format'],
    ['reconcile: limit=0', rget("$RQ&limit=0"), 400, 'invalid_field', 'limit'],
    ['reconcile: limit over the page size', rget("$RQ&limit=1001"), 400, 'invalid_field', 'limit'],
    ['reconcile: limit=-5', rget("$RQ&limit=-5"), 400, 'invalid_field', 'limit'],
    ['reconcile: cursor outside the range', rget("$RQ&cursor=2026-02-01.0"), 400, 'invalid_field', 'cursor'],
    ['reconcile: cursor without a rank', rget("$RQ&cursor=2026-01-05."), 400, 'invalid_field', 'cursor'],
    ['reconcile: cursor garbage', rget("$RQ&cursor=%27%3Bdrop"), 400, 'invalid_field', 'cursor'],
];

# the block's sections, from a table
sub raws  { [ map { $_->[1] } @{ $REQ{ $_[0] } } ] }
sub codes { [ map { $_->[2] } @{ $REQ{ $_[0] } } ] }
sub likes {
    [ map { my $f = $_->[4]; defined $f ? qr/"error":"\Q$_->[3]\E".*"field":"[^"]*\Q$f\E/s
                                        : qr/"error":"\Q$_->[3]\E"/ } @{ $REQ{ $_[0] } } ]
}

# check: the application was never reached, neither by a body nor in its log
sub not_reached {
    my ($table, @res) = @_;
    my $rows = $REQ{$table};
    for my $i (0 .. $#res) {
        isnt $res[$i]{body} // '', 'app', "$rows->[$i][0]: application not reached";
    }
    my $log = "$ENV{TEST_NGINX_SERVROOT}/logs/app.log";
    my $n = -e $log ? do { open my $fh, '<', $log or die; my @l = <$fh>; scalar @l } : 0;
    is $n, 0, "$table: logs/app.log has no request";
    unlink $log;
}

# the directive rows become --- must_die blocks after the hand-written ones
{
    my $data = do { local $/; <main::DATA> };
    my $n = 1000;
    for my $c (@BAD_CONF) {
        my ($name, $http, $conf, $pats, $skip) = @$c;
        $data .= sprintf "\n=== TEST %d: nginx -t: %s\n--- http_config\n    %s\n--- config\n    %s\n"
            . "--- must_die\n--- error_log\n%s\n",
            ++$n, $name, $http // $R, $conf // '', join("\n", @$pats);
        $data .= "--- SKIP\n" if $skip;      # a known bug, see the row
    }
    close main::DATA;
    open main::DATA, '<', \$data or die $!;
}

run_tests();

__DATA__

=== TEST 1: links: malformed, tampered, truncated, expired, out of scope
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    psd_link_max_ttl 1d;
    location /dl/ {
        psd_link on;
        psd_link_revocation on;
    }
    location = /orders/status { psd_order_status customer; }
--- user_files
>>> dl/a.txt
A
>>> dl/b.txt
B
>>> dl/p/c.txt
C
--- init
redis_cmd('HSET', 'psd:{link:revokedlink}', 'revoked', time);
--- raw_request eval
main::raws('link')
--- error_code eval
main::codes('link')
--- response_body_like eval
main::likes('link')
--- check
not_reached('link', @_);



=== TEST 2: link issue and revoke endpoints: auth, methods, bad JSON and fields, size
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_link_max_ttl 1d;
    location = /api/issue { psd_link_issue; psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api; }
    location = /api/revoke { psd_link_revoke; psd_link_revocation on; psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- raw_request eval
main::raws('link_api')
--- error_code eval
main::codes('link_api')
--- response_body_like eval
main::likes('link_api')
--- check
is scalar @{ redis_cmd('KEYS', '*') }, 0, 'link api: nothing written to Redis';



=== TEST 3: fraud admin: auth, method, bad JSON, bad events and lists
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_fraud_rule failed "count(payment_failed) by $remote_addr over 1h >= 3" block;
--- config
    location = /fa { psd_fraud_admin; psd_fraud_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- raw_request eval
main::raws('fraud_admin')
--- error_code eval
main::codes('fraud_admin')
--- response_body_like eval
main::likes('fraud_admin')
--- check
is scalar @{ redis_cmd('KEYS', '*') }, 0, 'fraud admin: nothing written to Redis';



=== TEST 4: checkout: bad JSON, bad cards, wrong types, size, content type; the application is never reached
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    client_body_buffer_size 4k;
    location = /checkout {
        psd_checkout_session on;
        psd_idempotency on;
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        psd_tokenize_field card.exp expiry;
        psd_tokenize_field card.name holder;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /gw {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /app { access_log logs/app.log; return 200 "app"; }
--- raw_request eval
main::raws('checkout')
--- error_code eval
main::codes('checkout')
--- response_body_like eval
main::likes('checkout')
--- check
not_reached('checkout', @_);
is scalar(grep { /^psd:\{v/ } @{ redis_cmd('KEYS', '*') }), 0, 'checkout: no card in the vault';



=== TEST 5: webhooks: missing and garbled signatures, stale timestamps, wrong secret, bad bodies; the application is never reached
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 4k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe;
        psd_webhook_pass on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /wh2 {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe;
    }
    location = /std {
        psd_webhook standard;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std;
        psd_webhook_pass on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /app { access_log logs/app.log; return 200 "app"; }
--- raw_request eval
main::raws('webhook')
--- error_code eval
main::codes('webhook')
--- response_body_like eval
main::likes('webhook')
--- check
not_reached('webhook', @_);
is redis_cmd('EXISTS', 'psd:{order:ord_1}'), 0, 'webhook: no order recorded';



=== TEST 6: tickets, ticket admin, order status, counter: missing fields, bad JSON, oversize, auth
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    client_body_buffer_size 4k;
    psd_ticket_max_message 500;
    location = /t { psd_ticket on; }
    location = /tp { psd_ticket on; psd_ticket_order_proof /orders/status; }
    location = /ta { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api; }
    location = /os { psd_order_status staff; psd_order_api_key $TEST_NGINX_CONF_DIR/keys/api; }
    location = /n { psd_counter $arg_k; }
--- raw_request eval
main::raws('ticket')
--- error_code eval
main::codes('ticket')
--- response_body_like eval
main::likes('ticket')
--- check
is scalar(grep { /tq:/ } @{ redis_cmd('KEYS', '*') }), 0, 'tickets: no stream written';



=== TEST 7: rating links: forged, download link, expired, bad scores and comments, unknown, unresolved and rated tickets
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /rate/ { psd_ticket_rating on; }
--- init
redis_cmd('HSET', 'psd:{tq:general}:t:general.open', 'state', 'open');
redis_cmd('HSET', 'psd:{tq:general}:t:general.rated', 'state', 'resolved', 'csat_score', 5);
--- raw_request eval
main::raws('rating')
--- error_code eval
main::codes('rating')
--- response_body_like eval
main::likes('rating')
--- check
is_deeply redis_cmd('HGETALL', 'psd:{tq:general}:t:general.open'), ['state', 'open'], 'rating: open ticket unchanged';
is_deeply redis_cmd('HGETALL', 'psd:{tq:general}:t:general.rated'), ['state', 'resolved', 'csat_score', '5'],
    'rating: rated ticket unchanged';



=== TEST 8: carrier webhooks: proofs, bodies, every field, sizes; the application is never reached, nothing written
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 4k;
    psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe;
    psd_webhook_pass on;
    psd_webhook_carrier_path order order_ref;
    psd_webhook_carrier_path tracking tracking;
    psd_webhook_carrier_path status event;
    psd_webhook_carrier_path time at;
    location = /cw {
        psd_webhook carrier;
        psd_webhook_signature shared X-Carrier-Token;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /ch {
        psd_webhook carrier;
        psd_webhook_signature hmac-sha256 X-Sig hex prefix=sha256=;
        psd_webhook_carrier_path event_id id;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /app { access_log logs/app.log; return 200 "app"; }
--- raw_request eval
main::raws('carrier')
--- error_code eval
main::codes('carrier')
--- response_body_like eval
main::likes('carrier')
--- check
not_reached('carrier', @_);
is scalar @{ redis_cmd('KEYS', '*') }, 0, 'carrier: nothing written to Redis';
=== TEST 9: reconciliation export: auth, method, bad ranges, formats, limits and cursors; nothing read or written
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /r { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- raw_request eval
main::raws('reconcile')
--- error_code eval
main::codes('reconcile')
--- response_body_like eval
main::likes('reconcile')
--- check
is scalar @{ redis_cmd('KEYS', '*') }, 0, 'reconcile: nothing written to Redis';
