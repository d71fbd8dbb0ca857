
# Copyright: hasched contributors
#
# 008_dr_drill.pl: the disaster-recovery drill of doc/runbooks.md, "Region
# lost": a primary with a synchronous standby (same region) and an
# asynchronous DR standby (the other region); a client submits jobs one
# after the other; the primary and the synchronous standby are lost at
# once; the DR standby is promoted by hand.
#
# Proves:
#   - what is lost is exactly the unreplicated tail: every acknowledged job
#     up to the newest one the DR standby has is there (no hole), and the
#     DR standby has at most the one job in flight that was never
#     acknowledged;
#   - hasched resumes on the DR node after the promotion: a new epoch, a
#     failover event, a new SQL job runs there;
#   - nothing is recorded twice: every job the SQL jobs wrote exists once.
# Prints the RPO (acknowledged jobs lost, and the seconds between the newest
# job the DR has and the newest acknowledged) and the RTO (loss -> the DR
# node accepts submits; loss -> the first SQL job started there).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/008_dr_drill.pl
use strict;
use warnings;

use HaschedCluster;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $primary = HaschedCluster->primary('primary', streaming => 1,
	conf => "hasched.max_executors = 2\nwal_log_hints = on\n");
$primary->query(q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.effects (job bigint, n int);
});
my $sync = HaschedCluster->standby($primary, 'sync', sync => 1, backup => 'base');
my $dr = HaschedCluster->standby($primary, 'dr', backup => 'base');

# SQL jobs that write their effect once per attempt that commits
my $pre = $primary->query(q{
	SELECT count(*) FROM (SELECT hasched.submit('sqlq',
		jsonb_build_object('sql', 'INSERT INTO public.effects VALUES (0, ' || g || ')')) FROM generate_series(1, 50) g) s});
ok($primary->poll("SELECT count(*) = 50 FROM hasched.job WHERE queue = 'sqlq' AND state = 'succeeded'"),
	'50 SQL jobs ran on the primary');

# --- the client: one psql session submitting one job after the other --------
# (statements from a file and results to a file: everything psql received
# is in the file when it exits, whatever the moment it lost the server)
my $dir = PostgreSQL::Test::Utils::tempdir();
open my $fh, '>', "$dir/submits.sql" or die;
print $fh "SELECT hasched.submit('default', jsonb_build_object('n', $_), tenant => current_user);\n"
  for 1 .. 200000;
close $fh;
my $client = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $primary->connstr('postgres'),
		'-f', "$dir/submits.sql" ],
	'>' => "$dir/acked.out", '2>' => "$dir/client.err");
$primary->poll_query_until('postgres',
	"SELECT count(*) > 500 FROM hasched.job WHERE queue = 'default'")
  or die 'the client does not submit';
sleep 2;
pass('the client is submitting');

# --- the region is lost: the primary and its synchronous standby at once --------
my $lost_at = time;
$primary->stop('immediate');
$sync->stop('immediate');
# psql stops at the lost connection (ON_ERROR_STOP)
$client->finish;
my @acked = split /\n/, slurp_file("$dir/acked.out");
diag(sprintf('acknowledged submits: %d; client: %s', scalar @acked,
		slurp_file("$dir/client.err") =~ s/\n.*//sr));

# --- the runbook: promote the DR standby by hand ---------------------------------
my ($replayed, $replay_ts) = split /\|/,
  $dr->query('SELECT pg_last_wal_replay_lsn(), extract(epoch FROM pg_last_xact_replay_timestamp())');
$dr->promote;
my $writable_at;
my $end = time + 60;
while (time < $end)
{
	my ($rc, $o) = $dr->psql('postgres', q{SELECT hasched.submit('default', '{"after": true}') > 0});
	if ($rc == 0 && $o eq 't') { $writable_at = time; last; }
	usleep(20_000);
}
ok(defined $writable_at, 'the promoted DR node accepts submits');
ok($dr->wait_scheduler('primary'), "hasched's scheduler is active on the DR node");
is($dr->query(q{SELECT count(*) FROM hasched.event WHERE kind = 'failover'}), '1',
	'a failover event was written');
is($dr->query(q{SELECT max(epoch) FROM hasched.epoch}), '2', 'a new epoch was opened');

# --- RPO: what is lost is the unreplicated tail, nothing else --------------------
my $acked_list = join(',', @acked) || '0';
my $last_acked = $acked[-1] // 0;
my $present = $dr->query(
	"SELECT count(*) FROM hasched.job WHERE id IN ($acked_list)");
my $newest_on_dr = $dr->query(
	"SELECT coalesce(max(id), 0) FROM hasched.job WHERE queue = 'default' AND NOT payload ? 'after'");
my $holes = $dr->query(
	"SELECT count(*) FROM unnest(ARRAY[$acked_list]::bigint[]) a(id)"
	  . " WHERE a.id <= $newest_on_dr AND NOT EXISTS (SELECT 1 FROM hasched.job j WHERE j.id = a.id)");
is($holes, '0', 'no acknowledged job older than the newest on the DR node is missing (no hole)');
my $unacked = $dr->query(
	"SELECT count(*) FROM hasched.job WHERE queue = 'default' AND NOT payload ? 'after'"
	  . " AND id > $last_acked");
cmp_ok($unacked, '<=', 1, 'the DR node has at most the one job in flight that was never acknowledged');
my $lost = scalar(@acked) - $present;
# (the replay lag: how long before the loss began the DR node's last
# replayed commit was made; 0 when it replayed commits made while the
# region was shutting down)
diag(sprintf('RPO: %d of %d acknowledged jobs lost; the DR node had replayed up to %s, replay lag at the loss %.3f s',
		$lost, scalar @acked, $replayed, $lost_at - $replay_ts > 0 ? $lost_at - $replay_ts : 0));

# --- hasched works on the DR node, and nothing ran twice --------------------------
my $id = $dr->query(q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.effects VALUES (-1, -1)"}')});
ok($dr->poll("SELECT state = 'succeeded' FROM hasched.job WHERE id = $id"),
	'a new SQL job runs on the DR node');
my $first_start = $dr->query(
	"SELECT extract(epoch FROM min(started_at)) FROM hasched.job WHERE epoch = 2");
is($dr->query(q{SELECT count(*) FROM (SELECT n FROM public.effects GROUP BY n HAVING count(*) > 1) d}),
	'0', "no SQL job's effect exists twice");
diag(sprintf('RTO: loss -> DR accepts submits %.2f s (promotion by hand included); loss -> first job started in epoch 2 %.2f s',
		$writable_at - $lost_at, $first_start - $lost_at));

done_testing();
