# "nginx -t" of every example configuration conf/*.conf.
#
# The examples load the module as modules/ngx_http_psd_module.so (relative
# to the nginx prefix) and name key files relative to the conf directory
# (keys/...).  So conf/ is copied to t/servroot/001-conf/conf/, the files in
# conf/keys/ get mode 0600, t/servroot/001-conf/modules points to the
# built module's directory and nginx runs with -p t/servroot/001-conf/.
# nginx -t creates the pid file, the temp directories and the access log, so
# whichever of these an example leaves at Debian's defaults (/run,
# /var/lib/nginx, /var/log/nginx) is set inside the servroot instead.
use strict;
use warnings;
use lib 't/lib';
use PsdTest qw(:DEFAULT nginx_t memcheck_reports module_path);
use File::Path qw(make_path);
use File::Basename qw(basename dirname);

my $repo = $ENV{TEST_NGINX_REPO};
my $root = $ENV{TEST_NGINX_SERVROOT};
my @confs = sort glob "$repo/conf/*.conf";
plan skip_all => 'no example configurations conf/*.conf yet' unless @confs;

my $module = module_path();
BAIL_OUT("$module not found: run make build first") unless -f $module;

sub copy_tree {
    my ($from, $to) = @_;
    make_path($to);
    opendir my $d, $from or die "$from: $!";
    for my $name (grep { !/^\.\.?$/ } readdir $d) {
        if (-d "$from/$name") { copy_tree("$from/$name", "$to/$name"); next }
        open my $in, '<:raw', "$from/$name" or die "$from/$name: $!";
        open my $out, '>:raw', "$to/$name" or die "$to/$name: $!";
        local $/;
        print {$out} scalar(<$in>) // '';
        close $out or die "$to/$name: $!";
        chmod 0600, "$to/$name" if $to =~ m{/conf/keys(/|$)};
    }
}

copy_tree("$repo/conf", "$root/conf");

# Key files the examples name (keys/NAME) are never committed: make them as
# make run does, 64 hex characters, readable by the owner only.
for my $conf (@confs) {
    my $text = do { local (@ARGV, $/) = ($conf); <> };
    for my $key ($text =~ m{^[^#\n]*?\b(keys/[A-Za-z0-9._-]+)}mg) {
        my $path = "$root/conf/$key";
        next if -s $path;
        make_path(dirname($path));
        open my $fh, '>', $path or die "$path: $!";
        print {$fh} join '', map { sprintf '%02x', int rand 256 } 1 .. 32;
        close $fh;
        chmod 0600, $path;
    }
}
symlink dirname($module), "$root/modules" or die "symlink: $!";
make_path("$root/logs", "$root/tmp");

# Directives (main level, http level) that would otherwise use Debian's
# compiled-in paths outside the repository.
my @main = ('pid logs/nginx.pid;');    # nginx -t opens (creates) it
my @http = ('access_log logs/access.log;',
            map { "${_}_temp_path tmp/$_;" }
                qw(client_body proxy fastcgi uwsgi scgi));

for my $file (@confs) {
    my $name = basename $file;
    my $conf = "$root/conf/$name";
    my $text = do { local (@ARGV, $/) = ($conf); <> };
    my $set = sub { my ($d) = $_[0] =~ /^(\w+)/; $text !~ /^\s*\Q$d\E\s/m };
    my @add = grep { $set->($_) } @http;
    # on the line of "http {", so that line numbers stay those of conf/
    $text =~ s/^(\s*http\s*\{)/$1 @add/m if @add;
    open my $fh, '>', $conf or die "$conf: $!";
    print {$fh} $text;
    close $fh;
    my @g = grep { $set->($_) } @main;
    my ($status, $out) = nginx_t(prefix => $root, conf => "conf/$name",
                                 args => [ @g ? ('-g', "@g") : () ]);
    my @mem = memcheck_reports("$root/logs");
    ok($status == 0 && !@mem, "nginx -t conf/$name")
        or diag(join "\n", "wait status $status", $out, @mem);
}

done_testing();
