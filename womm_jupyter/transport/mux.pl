# womm's in-pod multiplexer. The coordinator keeps one long-lived exec stream per pod running
# this script, and carries every job connection of that pod over it, so a job costs no
# round trip to the Kubernetes API. Each channel is one connection to the pod's agent socket.
#
#   frames both ways: type byte, u32 channel, u32 length, payload
#     C open channel (to the agent)   D bytes   E end of channel
# perl-base only, like agent.pl.
use strict;
use warnings;
use Socket;
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);

my $agent = shift @ARGV // '/run/womm/agent.sock';
binmode STDIN;
binmode STDOUT;
# Exec streams may hand us non-blocking pipes: a full pipe would then look like an error (or
# an empty read like EOF) and end every job of the pod. Block instead.
for my $fh (\*STDIN, \*STDOUT) {
    my $flags = fcntl($fh, F_GETFL, 0);
    fcntl($fh, F_SETFL, $flags & ~O_NONBLOCK) if $flags;
}
# A job that ends before its client's last frames arrive (stdin EOF after `true` exited)
# has closed its agent socket: writing there must fail softly, not kill every channel.
$SIG{PIPE} = 'IGNORE';
my %chan;     # id -> socket
my %id_of;    # fileno -> id
my %deaf;     # id -> 1: the agent no longer reads this channel
my ($inbuf, $eof) = ('', 0);

# Frames for the coordinator are collected over one pass of the loop and written at once:
# each write becomes one message through the API server and the kubelet.
my $outbuf = '';

sub out {
    my ($type, $id, $data) = @_;
    $outbuf .= pack('a N N', $type, $id, length $data) . $data;
}

sub flush_out {
    while (length $outbuf) {
        my $w = syswrite(STDOUT, $outbuf);
        exit 0 unless defined $w;    # the coordinator is gone
        substr($outbuf, 0, $w, '');
    }
}

sub readable_now {
    my ($fh) = @_;
    my $rin = '';
    vec($rin, fileno $fh, 1) = 1;
    return select(my $rout = $rin, undef, undef, 0) > 0;
}

sub close_channel {
    my ($id) = @_;
    delete $deaf{$id};
    my $sock = delete $chan{$id} or return;
    delete $id_of{fileno $sock};
    close $sock;
}

while (!$eof || %chan) {
    last if $eof;    # the coordinator closed the stream: drop every channel (agents kill jobs)
    my $rin = '';
    vec($rin, 0, 1) = 1;
    vec($rin, $_, 1) = 1 for keys %id_of;
    my $n = select(my $rout = $rin, undef, undef, undef);
    next if $n < 0;
    for my $fd (keys %id_of) {
        next unless vec($rout, $fd, 1);
        my $id = $id_of{$fd};
        while (1) {
            my $got = sysread($chan{$id}, my $data, 65536);
            if (!$got) { close_channel($id); out('E', $id, ''); last; }
            out('D', $id, $data);
            # A job's exit status and the agent's close usually come together: send both.
            last unless length $outbuf < 262144 && readable_now($chan{$id});
        }
    }
    next unless vec($rout, 0, 1);
    my $got = sysread(STDIN, $inbuf, 262144, length $inbuf);
    next if !defined $got && $!{EINTR};
    if (!$got) { $eof = 1; next; }
    while (length($inbuf) >= 9) {
        my ($type, $id, $size) = unpack('a N N', $inbuf);
        last if length($inbuf) < 9 + $size;
        my $data = substr($inbuf, 9, $size);
        substr($inbuf, 0, 9 + $size, '');
        if ($type eq 'C') {
            my $sock;
            if (socket($sock, PF_UNIX, SOCK_STREAM, 0)
                && connect($sock, pack_sockaddr_un($agent))) {
                $chan{$id} = $sock;
                $id_of{fileno $sock} = $id;
            } else {
                out('E', $id, '');
            }
        } elsif ($type eq 'D') {
            my $sock = $chan{$id} or next;
            next if $deaf{$id};
            while (length $data) {
                my $w = syswrite($sock, $data);
                # The agent closed its end: usually a job that finished before the client's
                # last frames (stdin EOF) arrived. Its exit status may still be unread in
                # our receive buffer, so keep reading until EOF; only stop writing.
                if (!defined $w) { $deaf{$id} = 1; last; }
                substr($data, 0, $w, '');
            }
        } elsif ($type eq 'E') {
            # The client side ended: the agent sees its socket close and kills the job.
            close_channel($id);
        }
    }
} continue {
    flush_out();
}
flush_out();
