
# Copyright: hasched contributors
#
# 014_submit_cache_quota.pl: what makes a submit cheap must not weaken it.
#
#   - each session caches the queue defaults, the mode and the tenant's
#     limits it read: a change committed by another session is seen by the
#     next submit of every session (queue default, mode, tier limit), a
#     change rolled back is not;
#   - daily quotas are counted in shared memory, submits in flight
#     included: a submit that would take the tenant past its limit together
#     with another session's uncommitted submit is refused, and taken back
#     counts (rollback) free the room again;
#   - the count survives a restart (read again from hasched.job and
#     hasched.quota_use), also for jobs deleted since they were submitted;
#   - hasched's own statements are planned with sequential scans off, the
#     caller's are not, also after an API call that failed, and the
#     caller's search_path is intact;
#   - a job inserted without the INSERT statement (the direct insert) gets
#     the table's defaults, and fires the triggers an administrator added:
#     row triggers on that path, statement triggers (with a transition
#     table) through the INSERT statement it then falls back to;
#   - without the invalidation triggers (a 0.1.0 schema under the 0.2.0
#     library) nothing is cached: a change is seen at once.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/014_submit_cache_quota.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary('main');
$node->query(
	q{
	CREATE ROLE acme NOLOGIN;
	INSERT INTO hasched.tier (name, jobs_per_day, rate_per_second, burst)
		VALUES ('twenty', 20, 1000, 1000);
	INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'twenty');
	INSERT INTO hasched.queue (name) VALUES ('work');
});

my $a = $node->background_psql($node->db, on_error_stop => 0);
my $b = $node->background_psql($node->db, on_error_stop => 0);
for my $s ($a, $b)
{
	$s->query_safe("\\set VERBOSITY verbose");
	$s->query_safe("SET hasched.tenant = 'acme'");
}

# The SQLSTATE of a statement in session $s, or 'ok'.
sub state_of
{
	my ($s, $sql) = @_;
	$s->{stderr} = '';
	$s->query($sql);
	my $err = $s->{stderr};
	$s->{stderr} = '';
	return 'ok' if $err eq '';
	return $err =~ /ERROR:\s+(\w{5}):/ ? $1 : "unexpected: $err";
}

# ---------------------------------------------------------------------------
# the submit context cache
# ---------------------------------------------------------------------------
my $id = $a->query_safe(q{SELECT hasched.submit('work', '{}')});
is($node->query("SELECT max_attempts FROM hasched.job WHERE id = $id"),
	'3', 'session A submits with the queue default of 3 attempts (and caches it)');

$b->query_safe(q{UPDATE hasched.queue SET default_max_attempts = 7 WHERE name = 'work'});
$id = $a->query_safe(q{SELECT hasched.submit('work', '{}')});
is($node->query("SELECT max_attempts FROM hasched.job WHERE id = $id"),
	'7', 'a queue default changed by session B is used by A\'s next submit');

$b->query_safe(q{BEGIN; UPDATE hasched.queue SET default_max_attempts = 9 WHERE name = 'work'});
$id = $a->query_safe(q{SELECT hasched.submit('work', '{}')});
is($node->query("SELECT max_attempts FROM hasched.job WHERE id = $id"),
	'7', 'a change B has not committed is not seen');
$b->query_safe('ROLLBACK');
$id = $a->query_safe(q{SELECT hasched.submit('work', '{}')});
is($node->query("SELECT max_attempts FROM hasched.job WHERE id = $id"),
	'7', 'nor after B rolled it back');

$node->query(q{SELECT hasched.set_mode('read_only', 'maintenance')});
is(state_of($a, q{SELECT hasched.submit('work', '{}')}), 'JQ003',
	'read-only mode set by another session refuses A\'s next submit');
$node->query(q{SELECT hasched.set_mode('normal')});
is(state_of($a, q{SELECT hasched.submit('work', '{}')}), 'ok',
	'and normal mode accepts it again');

$node->query(q{DELETE FROM hasched.queue WHERE name = 'work'});
is(state_of($a, q{SELECT hasched.submit('work', '{}')}), 'JQ010',
	'a queue deleted by another session is unknown to A\'s next submit');
$node->query(q{INSERT INTO hasched.queue (name) VALUES ('work')});

# ---------------------------------------------------------------------------
# daily quota: counted in flight, taken back on rollback
# ---------------------------------------------------------------------------
my $used = $node->query(
	q{SELECT used_today FROM hasched.tenants WHERE tenant = 'acme'});
is($used, '5', 'acme has used 5 of its 20 jobs today');

$a->query_safe('BEGIN');
$a->query_safe(q{SELECT hasched.submit_many('work', array_fill('{}'::jsonb, ARRAY[10]))});
is(state_of($b, q{SELECT hasched.submit_many('work', array_fill('{}'::jsonb, ARRAY[6]))}),
	'JQ001', 'B cannot take 6 while A\'s 10 are in flight (5 + 10 + 6 > 20)');
is(state_of($b, q{SELECT hasched.submit_many('work', array_fill('{}'::jsonb, ARRAY[5]))}),
	'ok', 'B can take the last 5');
$a->query_safe('ROLLBACK');
is(state_of($b, q{SELECT hasched.submit_many('work', array_fill('{}'::jsonb, ARRAY[10]))}),
	'ok', 'A rolled back: its 10 are free again for B');
is(state_of($b, q{SELECT hasched.submit('work', '{}')}), 'JQ001',
	'the 21st job of the day is refused');
is($node->query(q{SELECT count(*) FROM hasched.job WHERE tenant = 'acme'::regrole}),
	'20', 'acme has exactly 20 jobs');

$a->quit;
$b->quit;

# ---------------------------------------------------------------------------
# planner settings and search path around API calls
# ---------------------------------------------------------------------------
$node->query(
	q{
	CREATE ROLE roomy NOLOGIN;
	INSERT INTO hasched.tier (name, jobs_per_day) VALUES ('big', 1000);
	INSERT INTO hasched.tenant (name, tier) VALUES ('roomy', 'big');
	CREATE SCHEMA app;
	ANALYZE hasched.queue, hasched.tenant, hasched.tier, hasched.job, hasched.quota_use;
});
my ($rc, $out, $err) = $node->psql(
	$node->db, q{
	SET search_path = app, public;
	LOAD 'auto_explain';
	SET auto_explain.log_min_duration = 0;
	SET auto_explain.log_nested_statements = on;
	SET auto_explain.log_level = notice;
	SET hasched.tenant = 'roomy';
	SELECT hasched.submit('work', '{}');
	SELECT hasched.submit('no_such_queue', '{}');
	RESET auto_explain.log_min_duration;
	SHOW search_path;
	SHOW enable_seqscan;
	EXPLAIN (COSTS OFF) SELECT * FROM hasched.queue WHERE name = 'work';
}, on_error_stop => 0);
like($err, qr/Index Scan using queue_pkey on queue.*Bitmap Index Scan on job_created_idx/s,
	'a submit reads the queue and counts the tenant\'s jobs by index, though the tables are tiny');
# (hasched.state, one row, is joined to every row: read whole by design)
unlike($err, qr/Seq Scan on (queue|tenant|tier|job|quota_use)\b/,
	'no other statement of the submit scans a table sequentially');
like($err, qr/JQ010|queue "no_such_queue" does not exist/, 'the second submit fails');
like($out, qr/^app, public\non\n.*Seq Scan on queue/ms,
	'after it the caller has its search_path and enable_seqscan, and its own query is planned with them');

# ---------------------------------------------------------------------------
# the direct insert: defaults and triggers
# ---------------------------------------------------------------------------
is( $node->query(
		q{SET hasched.tenant = 'roomy';
		  BEGIN;
		  SELECT hasched.submit('work', '{"k": 1}', run_at => now() + interval '1 hour') AS id \gset
		  SELECT created_at = now(), attempt, id = currval('hasched.job_id_seq'), state,
				 payload->>'k', max_attempts, timeout
			FROM hasched.job WHERE id = :id;
		  COMMIT;}),
	't|0|t|scheduled|1|3|00:05:00',
	'a direct insert takes id, attempt and created_at from the table\'s defaults');

$node->query(
	q{
	CREATE TABLE public.seen (how text, n bigint);
	CREATE FUNCTION public.note_row() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN INSERT INTO public.seen VALUES ('row', NEW.id); RETURN NULL; END$$;
	CREATE FUNCTION public.note_statement() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN INSERT INTO public.seen SELECT 'statement', count(*) FROM new_jobs; RETURN NULL; END$$;
	CREATE TRIGGER note_row AFTER INSERT ON hasched.job
		FOR EACH ROW EXECUTE FUNCTION public.note_row();
});
$id = $node->query(q{SET hasched.tenant = 'roomy'; SELECT hasched.submit('work', '{}')});
is($node->query(q{SELECT string_agg(how || ' ' || n, ', ') FROM public.seen}),
	"row $id", 'an AFTER ROW trigger added to hasched.job fires for a submit');
$node->query(
	q{
	TRUNCATE public.seen;
	CREATE TRIGGER note_statement AFTER INSERT ON hasched.job
		REFERENCING NEW TABLE AS new_jobs
		FOR EACH STATEMENT EXECUTE FUNCTION public.note_statement();
});
$id = $node->query(q{SET hasched.tenant = 'roomy'; SELECT hasched.submit('work', '{}')});
is($node->query(q{SELECT string_agg(how || ' ' || n, ', ' ORDER BY how) FROM public.seen}),
	"row $id, statement 1", 'so does a statement trigger with a transition table');
$node->query(
	q{
	DROP TRIGGER note_row ON hasched.job;
	DROP TRIGGER note_statement ON hasched.job;
});

# ---------------------------------------------------------------------------
# the count survives a restart, deleted jobs included
# ---------------------------------------------------------------------------
$node->query(
	q{DELETE FROM hasched.job WHERE tenant = 'acme'::regrole AND id IN
	   (SELECT id FROM hasched.job WHERE tenant = 'acme'::regrole ORDER BY id LIMIT 8)});
$node->restart;
like($node->query_error(q{SET hasched.tenant = 'acme'; SELECT hasched.submit('work', '{}')}),
	qr/JQ001: tenant "acme" has reached its quota of 20 jobs per day/,
	'after a restart the day\'s 20 jobs (8 of them deleted) still count');
is($node->query(
		q{SELECT used_today FROM hasched.tenants WHERE tenant = 'acme'}),
	'20', 'hasched.tenants shows 20 used');

# ---------------------------------------------------------------------------
# no cache without the invalidation triggers
# ---------------------------------------------------------------------------
my $c = $node->background_psql($node->db, on_error_stop => 0);
$c->query_safe("SET hasched.tenant = 'roomy'");
$id = $c->query_safe(q{SELECT hasched.submit('work', '{}')});
is($node->query("SELECT max_attempts FROM hasched.job WHERE id = $id"), '3',
	'a session submits with the queue default of 3 attempts');
$node->query(
	q{ALTER EXTENSION hasched DROP FUNCTION hasched.config_changed();
	  DROP FUNCTION hasched.config_changed() CASCADE;});
$c->query_safe(q{SELECT hasched.submit('work', '{}')});
$node->query(q{UPDATE hasched.queue SET default_max_attempts = 4 WHERE name = 'work'});
$id = $c->query_safe(q{SELECT hasched.submit('work', '{}')});
is($node->query("SELECT max_attempts FROM hasched.job WHERE id = $id"), '4',
	'with the triggers gone, the session reads a changed default at once');
$c->quit;

$node->stop;
done_testing();
