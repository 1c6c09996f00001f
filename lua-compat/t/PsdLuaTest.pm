package PsdLuaTest;

# What the lua-compat tests (t/06*-lua-compat*.t) share on top of PsdTest:
# the skip when lua-nginx-module, lua-resty-redis or lua-cjson are not
# installed, the Lua modules loaded into the generated nginx.conf, and a
# few request helpers.  Load it right after PsdTest:
#
#   use lib 't/lib', 'lua-compat/t';
#   use PsdTest;
#   use PsdLuaTest;           # may plan skip_all

use strict;
use warnings;
use Test::More ();
use PsdTest::HTTP qw(http_request http_get);
use Exporter ();

our @ISA = ('Exporter');

our @EXPORT = qw(lua_get lua_post lua_http_config);

our $MODULES = $ENV{TEST_NGINX_LUA_MODULES} // '/usr/lib/nginx/modules';
my @LUA_PATHS = qw(/usr/share/lua/5.1 /usr/local/share/lua/5.1
                   /usr/local/openresty/lualib);
my @LUA_CPATHS = (glob('/usr/lib/*/lua/5.1'), '/usr/lib/lua/5.1',
                  '/usr/local/lib/lua/5.1', '/usr/local/openresty/lualib');

sub _skip_reason {
    my @no = grep { !-f "$MODULES/$_" } qw(ndk_http_module.so ngx_http_lua_module.so);
    return "lua-nginx-module not installed ($MODULES/@no missing; util/deps"
        . " --lua installs libnginx-mod-http-lua)" if @no;
    return 'lua-resty-redis not installed (util/deps --lua installs'
        . ' lua-nginx-redis)'
        unless grep { -f "$_/nginx/redis.lua" || -f "$_/resty/redis.lua" } @LUA_PATHS;
    return 'lua-cjson not installed (util/deps --lua installs lua-cjson)'
        unless grep { -f "$_/cjson.so" } @LUA_CPATHS;
    return undef;
}

sub import {
    if (my $why = _skip_reason()) {
        Test::More::plan(skip_all => $why);
    }
    __PACKAGE__->export_to_level(1, @_);
}

# load_module must come before events {}, and PsdTest puts --- main_config
# after it: the Lua modules go right below the module's own load_module
# line of every generated nginx.conf
{
    no warnings 'redefine';
    my $conf = \&PsdTest::_conf;
    *PsdTest::_conf = sub {
        my $c = $conf->(@_);
        $c =~ s{^(load_module [^\n]*;\n)}{$1load_module $MODULES/ndk_http_module.so;
load_module $MODULES/ngx_http_lua_module.so;\n}m
            or die "no load_module line in the generated nginx.conf\n";
        return $c;
    };
}

# lua_package_path of lua-compat and its test helpers
$ENV{TEST_NGINX_LUA_PATH} = "$ENV{TEST_NGINX_REPO}/lua-compat/lib/?.lua;"
    . "$ENV{TEST_NGINX_REPO}/lua-compat/t/?.lua;;";

sub lua_get { http_get($_[0], $_[1]) }

sub lua_post {
    my ($path, $body, %h) = @_;
    my $hdr = join '', map { "$_: $h{$_}\r\n" } sort keys %h;
    return http_request("POST $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n${hdr}Content-Length: " . length($body)
        . "\r\n\r\n$body");
}

1;
