# womm's per-job transport. GNU parallel runs every job as `$PARALLEL_SHELL -c COMMAND`; womm
# points PARALLEL_SHELL at this script, so each job costs one small perl start (no modules, no
# Python) plus one unix-socket connection to the worker agent that serves the job's slot. The
# agent runs COMMAND with its own shell and reports the exit status; see agent.pl.
#
# Why a shell and not --ssh: GNU parallel's remote path spends ~11 ms of its own single-threaded
# CPU per job (wrapper generation, hex encoding) before any transport runs, which alone caps a
# run at ~2/3 of local speed. As a shell, jobs keep GNU parallel's local fast path and its
# quoting stays exactly what local GNU parallel produces.
#
# Environment set by the coordinator on GNU parallel's process:
#   WOMM_SLOTS  directory with one socket (a symlink to a live worker's agent) per job slot
#   WOMM_JOBS   directory receiving SEQ.out, SEQ.err and SEQ.meta for the run's records
#   WOMM_ENV    space-separated names of variables to forward (GNU parallel's --env)
# Inside a worker the agent sets WOMM_AGENT_SHELL: nested uses (--pipe) run the real shell.
if (defined $ENV{WOMM_AGENT_SHELL}) { exec { $ENV{WOMM_AGENT_SHELL} } $ENV{WOMM_AGENT_SHELL}, @ARGV; }

my @words = @ARGV;
shift @words if @words && $words[0] eq '-c';
my $command = join(' ', @words);
my $env = '';
for my $name ((grep { /^PARALLEL_/ } keys %ENV), split(' ', $ENV{WOMM_ENV} // '')) {
    $env .= "\0$name=$ENV{$name}" if defined $ENV{$name};
}

my $slot = $ENV{PARALLEL_JOBSLOT} || 1;
my $path = "$ENV{WOMM_SLOTS}/$slot";
my $sock;
# Socket constants are Linux's; loading Socket.pm would triple this script's start-up time.
my $address = pack('S', 1) . $path . "\0";
# A slot whose worker died is re-pointed by the coordinator within moments: wait for it
# briefly rather than fail a job that could run. Nothing ever runs locally instead.
my $deadline = time + ($ENV{WOMM_CONNECT_TIMEOUT} // 10);
while (1) {
    socket($sock, 1, 1, 0) or die "womm: socket: $!\n";
    last if connect($sock, $address);
    if (time > $deadline) {
        print STDERR "womm: no live worker for job slot $slot ($path: $!)\n";
        exit 255;
    }
    close $sock;
    select(undef, undef, undef, 0.05);
}

sub send_all {
    my ($fh, $msg) = @_;
    while (length $msg) {
        my $w = syswrite($fh, $msg);
        return 0 if !defined $w;
        substr($msg, 0, $w, '');
    }
    return 1;
}

my $header = $command . $env;
send_all($sock, pack('N', length $header) . $header) or exit 255;

my $seq = $ENV{PARALLEL_SEQ};
my $jobs = $ENV{WOMM_JOBS};
my ($capture_out, $capture_err);
if (defined $jobs && defined $seq) {
    # One byte per started job: the coordinator's count of running jobs is this file's size.
    if (open(my $started, '>>', "$jobs/started")) { syswrite($started, '.'); close $started; }
    open($capture_out, '>', "$jobs/$seq.out");
    open($capture_err, '>', "$jobs/$seq.err");
}
my %sink = (O => [\*STDOUT, $capture_out], E => [\*STDERR, $capture_err]);

for my $sig (qw(TERM INT HUP)) {
    # --timeout, --halt and Ctrl-C land here: closing the socket makes the agent kill the
    # job's process group on the worker.
    # Then die of the same signal, so GNU parallel's joblog and exit status show the job as
    # killed (Exitval -1, Signal 15 for --timeout), exactly as for a local job.
    $SIG{$sig} = sub { close $sock; $SIG{$sig} = 'DEFAULT'; kill $sig, $$; exit 255; };
}
$SIG{PIPE} = 'IGNORE';

my ($buf, $stdin_open, $worker, $status) = ('', 1, '?', undef);
while (!defined $status) {
    my $rin = '';
    vec($rin, fileno($sock), 1) = 1;
    vec($rin, 0, 1) = 1 if $stdin_open;
    my $n = select(my $rout = $rin, undef, undef, undef);
    next if $n < 0;
    if ($stdin_open && vec($rout, 0, 1)) {
        my $got = sysread(STDIN, my $data, 65536);
        if ($got) { send_all($sock, 'I' . pack('N', $got) . $data); }
        else { $stdin_open = 0; send_all($sock, "i\0\0\0\0"); }
    }
    next unless vec($rout, fileno($sock), 1);
    my $got = sysread($sock, $buf, 262144, length $buf);
    if (!$got) {
        # Before its first frame the worker is known only by the socket the slot points at.
        $worker = (readlink($path) // $path) =~ s{.*/}{}r if $worker eq '?';
        print STDERR "womm: lost the connection to worker $worker during the job\n";
        exit 255;
    }
    while (length($buf) >= 5) {
        my ($type, $size) = unpack('a N', $buf);
        last if length($buf) < 5 + $size;
        my $payload = substr($buf, 5, $size);
        substr($buf, 0, 5 + $size, '');
        if ($type eq 'O' || $type eq 'E') {
            my ($out, $copy) = @{ $sink{$type} };
            send_all($out, $payload);
            print {$copy} $payload if $copy;
        }
        elsif ($type eq 'H') { $worker = $payload; }
        elsif ($type eq 'X') { $status = unpack('N', $payload); }
    }
}
if ($capture_out) {
    close $capture_out;
    close $capture_err;
    if (open(my $meta, '>', "$jobs/$seq.meta")) {
        print {$meta} "$worker\t$status\n";
        close $meta;
    }
}
exit(($status & 127) ? 128 + ($status & 127) : $status >> 8);
