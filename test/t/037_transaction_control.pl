
# Copyright: hasched contributors
#
# 037_transaction_control.pl: a job's SQL cannot end or split the
# transaction it runs in, and says so (issue 8, item 10).
#
# Proves, with the real executors:
#   - submit(), submit_many() and schedule() refuse SQL with a transaction
#     control statement (COMMIT, ROLLBACK, BEGIN, SAVEPOINT, PREPARE
#     TRANSACTION, ..., alone or after other statements) with JQ018 and
#     "transaction control statements are not allowed in a job's SQL";
#     nothing is written;
#   - a job whose SQL is COMMIT all the same (a row written without
#     submit()) goes dead with that message and the SPI code that refused
#     it, not "Unrecognized SPI code 0".
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/037_transaction_control.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'txctl', conf => q{
hasched.max_executors = 1
});

$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
});

my $refusal = qr/ERROR:  JQ018: transaction control statements are not allowed in a job's SQL/;
my $jobs_before = $node->query('SELECT count(*) FROM hasched.job');
for my $sql ('COMMIT', 'ROLLBACK', 'BEGIN', 'START TRANSACTION', 'END', 'ABORT',
	'SAVEPOINT a', 'RELEASE SAVEPOINT a', 'ROLLBACK TO SAVEPOINT a', 'COMMIT AND CHAIN',
	q{PREPARE TRANSACTION 'x'}, 'SELECT 1; COMMIT', 'COMMIT; SELECT 1')
{
	(my $json = $sql) =~ s/'/''/g;
	like($node->query_error(qq{SELECT hasched.submit('sqlq', '{"sql": "$json"}')}),
		$refusal, "submit of '$sql' is refused with JQ018");
}
like($node->query_error(q{SELECT hasched.submit_many('sqlq', ARRAY['{"sql": "SELECT 1"}', '{"sql": "ROLLBACK"}']::jsonb[])}),
	$refusal, 'submit_many with a ROLLBACK among its payloads is refused with JQ018');
is($node->query('SELECT count(*) FROM hasched.job'), $jobs_before, 'the refused submits wrote no job');
like($node->query_error(q{SELECT hasched.schedule('s', '@every 10 seconds', 'sqlq', '{"sql": "COMMIT"}')}),
	$refusal, 'schedule() with COMMIT is refused with JQ018');
is($node->query('SELECT count(*) FROM hasched.schedule'), '0', '... and wrote no schedule');

# a row written without submit()
my $id = $node->query(
	q{INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
	  VALUES ('sqlq', current_user::regrole, current_user::regrole, 5, 'pending', now(), 1, '1 minute',
	          '{"sql": "COMMIT"}')
	  RETURNING id});
# wake an executor with a job submitted the usual way
my $ok = $node->query(q{SELECT hasched.submit('sqlq', '{"sql": "SELECT 1"}', priority => 'low')});
ok($node->poll( "SELECT state = 'dead' FROM hasched.job WHERE id = $id"),
	'the job whose SQL is COMMIT goes dead');
my $error = $node->query("SELECT last_error FROM hasched.job WHERE id = $id");
like($error, qr/^transaction control statements are not allowed in a job's SQL/, "its last_error says why: $error");
unlike($error, qr/Unrecognized SPI code/, '... and names no unrecognized SPI code');
like($error, qr/SPI_ERROR_TRANSACTION/, '... but the SPI code that refused it');
ok($node->poll( "SELECT state = 'succeeded' FROM hasched.job WHERE id = $ok"),
	'the other job succeeds');

$node->stop;
done_testing();
