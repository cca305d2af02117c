# womm worker agent. Started as a worker's main process (perl-base only: it must run in any
# image that has perl, which GNU parallel needs anyway). It listens on a unix socket and runs
# one job per connection, the way sshd runs one command per session:
#
#   client -> agent  u32 length, then the command (run with $SHELL -c) followed by
#                    "\0NAME=VALUE" entries for the job's environment
#   agent  -> client frames: type byte, u32 length, payload
#       H worker name   O stdout bytes   E stderr bytes   X u32 wait status (last frame)
#   client -> agent  frames: I stdin bytes, i stdin closed
#
# The exit status always comes from here, never from the transport. A connection that closes
# before X means the client died (Ctrl-C, --timeout): the job's process group is killed.
use strict;
use warnings;
use Socket;
use POSIX ();

my %opt = (listen => undef, name => 'worker', cwd => undef, shell => '', alias => '',
           mounted => '');
while (@ARGV) {
    my $key = shift @ARGV;
    $key =~ s/^--//;
    $opt{$key} = shift @ARGV;
}
die "womm-agent: --listen PATH is required\n" unless defined $opt{listen};
# Pods of one Deployment share a command line: an empty name means "the pod's own name".
$opt{name} = $ENV{HOSTNAME} || 'worker' if $opt{name} eq '';

# Under docker/kubectl exec SHELL is unset and GNU parallel's wrapper then runs nothing.
my $shell = ($opt{shell} ne '' && -x $opt{shell}) ? $opt{shell}
          : (-x '/bin/bash' ? '/bin/bash' : '/bin/sh');
$ENV{SHELL} = $shell;
# GNU parallel names its shell (womm's client, see womm_sh.pl) inside some commands it builds
# (--pipe); in here that name must lead to the real shell.
$ENV{WOMM_AGENT_SHELL} = $shell;
$ENV{WOMM_WORKER} = $opt{name};    # jobs may want to know where they run
if ($opt{alias} ne '' && !-e $opt{alias}) {
    (my $dir = $opt{alias}) =~ s{/[^/]*$}{};
    my $made = '';
    for my $part (split m{/}, $dir) { $made .= "$part/"; mkdir $made; }
    symlink $shell, $opt{alias};
}
if (defined $opt{cwd} && $opt{cwd} ne '') {
    chdir $opt{cwd} or die "womm-agent: cannot enter $opt{cwd}: $!\n";
}

socket(my $server, PF_UNIX, SOCK_STREAM, 0) or die "womm-agent: socket: $!\n";
my $tmp = "$opt{listen}.tmp";
unlink $tmp;
# Whoever can connect runs commands as this user: the socket is the user's alone (0600) from
# the moment it exists. umask, not chmod after bind, so it never exists with wider modes.
my $umask = umask 0177;
bind($server, pack_sockaddr_un($tmp)) or die "womm-agent: bind $tmp: $!\n";
umask $umask;
listen($server, 512) or die "womm-agent: listen: $!\n";
# The socket appears under its final name only once it accepts: readiness is "the file exists".
rename $tmp, $opt{listen} or die "womm-agent: rename: $!\n";

my %sessions;
$SIG{CHLD} = sub {
    while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) { delete $sessions{$pid}; }
};
$SIG{PIPE} = 'IGNORE';
for my $sig (qw(TERM INT HUP)) {
    $SIG{$sig} = sub {
        kill 'TERM', keys %sessions;
        unlink $opt{listen};
        exit 0;
    };
}

while (1) {
    my $client;
    accept($client, $server) or next;    # EINTR from SIGCHLD
    my $pid = fork;
    if (!defined $pid) { close $client; next; }
    if ($pid == 0) {
        close $server;
        $SIG{CHLD} = 'DEFAULT';
        $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP);
        serve($client);
        POSIX::_exit(0);
    }
    $sessions{$pid} = 1;
    close $client;
}

sub read_exact {
    my ($fh, $n) = @_;
    my $buf = '';
    while (length($buf) < $n) {
        my $got = sysread($fh, $buf, $n - length($buf), length($buf));
        return undef if !$got;
    }
    return $buf;
}

# The H frame rides along with the session's first other frame: on Kubernetes every separate
# write is one more message through the API server, and most jobs send nothing before X.
my $hello = '';

sub send_frame {
    my ($fh, $type, $data) = @_;
    my $msg = $hello . $type . pack('N', length $data) . $data;
    $hello = '';
    while (length $msg) {
        my $w = syswrite($fh, $msg);
        return 0 if !defined $w;
        substr($msg, 0, $w, '');
    }
    return 1;
}

sub kill_group {
    my ($pid) = @_;
    # GNU parallel's own escalation: TERM, TERM, TERM, KILL.
    for my $step (['TERM', 0.2], ['TERM', 0.1], ['TERM', 0.05], ['KILL', 0.025]) {
        last unless kill 0, -$pid;
        kill $step->[0], -$pid;
        select(undef, undef, undef, $step->[1]);
    }
}

sub serve {
    my ($sock) = @_;
    my $len = read_exact($sock, 4) // return;
    my $header = read_exact($sock, unpack('N', $len)) // return;
    my ($command, @env) = split /\0/, $header, -1;
    $hello = 'H' . pack('N', length $opt{name}) . $opt{name};

    pipe(my $in_r, my $in_w) or return;
    pipe(my $out_r, my $out_w) or return;
    pipe(my $err_r, my $err_w) or return;
    my $job = fork;
    return unless defined $job;
    if ($job == 0) {
        POSIX::setsid();
        for (@env) { my ($k, $v) = split /=/, $_, 2; $ENV{$k} = $v; }
        # Enter the project directory afresh for each job: a lazy share mounts it after the
        # agent started, and the agent's own cwd is still the directory underneath the mount.
        # A mount that broke (ENOTCONN) fails the job here instead of running it elsewhere.
        if (defined $opt{cwd} && $opt{cwd} ne '' && !chdir $opt{cwd}) {
            syswrite($err_w, "womm-agent: cannot enter $opt{cwd}: $!\n");
            POSIX::_exit(126);
        }
        # --mounted 1 (a lazy share): the project directory must be a mount point, never the
        # empty directory underneath a mount that ended (its device differs from its parent's).
        if ($opt{mounted}) {
            my @here = stat '.';
            my @up = stat '..';
            if (!@here || !@up || $here[0] == $up[0]) {
                syswrite($err_w, "womm-agent: $opt{cwd} is not mounted (the lazy share's mount "
                         . "ended): the job does not run here\n");
                POSIX::_exit(126);
            }
        }
        open(STDIN, '<&', $in_r);
        open(STDOUT, '>&', $out_w);
        open(STDERR, '>&', $err_w);
        close $_ for ($in_w, $out_r, $err_r, $sock, $in_r, $out_w, $err_w);
        $SIG{PIPE} = 'DEFAULT';
        { no warnings "exec"; exec { $shell } $shell, "-c", $command; }
        POSIX::_exit(127);
    }
    close $_ for ($in_r, $out_w, $err_w);

    my %outputs = (fileno($out_r) => [$out_r, 'O'], fileno($err_r) => [$err_r, 'E']);
    my ($inbuf, $stdin_eof, $frame) = ('', 0, '');
    while (%outputs) {
        my ($rin, $win) = ('', '');
        vec($rin, fileno($sock), 1) = 1 if defined $sock;
        vec($rin, $_, 1) = 1 for keys %outputs;
        vec($win, fileno($in_w), 1) = 1 if defined $in_w && length $inbuf;
        my $n = select(my $rout = $rin, my $wout = $win, undef, undef);
        next if $n < 0;    # EINTR
        if (defined $in_w && vec($wout, fileno($in_w), 1)) {
            my $w = syswrite($in_w, $inbuf);
            if (defined $w) { substr($inbuf, 0, $w, ''); } else { $inbuf = ''; }
        }
        if (defined $in_w && $stdin_eof && !length $inbuf) { close $in_w; undef $in_w; }
        for my $fd (keys %outputs) {
            next unless vec($rout, $fd, 1);
            my ($fh, $type) = @{ $outputs{$fd} };
            my $got = sysread($fh, my $data, 65536);
            if (!$got) { delete $outputs{$fd}; close $fh; next; }
            if (!send_frame($sock, $type, $data)) { kill_group($job); return; }
        }
        if (defined $sock && vec($rout, fileno($sock), 1)) {
            my $got = sysread($sock, $frame, 65536, length $frame);
            if (!$got) { kill_group($job); return; }    # the client is gone
            while (length($frame) >= 5) {
                my ($type, $size) = unpack('a N', $frame);
                last if length($frame) < 5 + $size;
                my $payload = substr($frame, 5, $size);
                substr($frame, 0, 5 + $size, '');
                if ($type eq 'I') { $inbuf .= $payload; }
                elsif ($type eq 'i') { $stdin_eof = 1; }
            }
            if (defined $in_w && $stdin_eof && !length $inbuf) { close $in_w; undef $in_w; }
        }
    }
    close $in_w if defined $in_w;
    waitpid($job, 0);
    send_frame($sock, 'X', pack('N', $?));
    close $sock;
}
