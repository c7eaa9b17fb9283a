"""What a master's ``INFO replication`` says about its replicas, as the confirmation rule reads it
(smoke/strategies/replication.py): which are in sync, which follow it. No server: the texts are
the servers' own, as measured."""

from __future__ import annotations

from smoke.strategies.replication import following_replicas, in_sync_replicas

# INFO replication as Valkey 8 printed it under a stream of WAITs (measured: lag=-1), plus a
# replica silent for 3 s and one in the middle of a full sync.
VALKEY_INFO = (
    b"# Replication\r\nrole:master\r\nconnected_slaves:4\r\n"
    b"slave0:ip=10.0.0.3,port=6379,state=online,offset=18723,lag=-1,type=replica\r\n"
    b"slave1:ip=10.0.0.2,port=6379,state=online,offset=18723,lag=0\r\n"
    b"slave2:ip=10.0.0.4,port=6379,state=online,offset=18000,lag=3\r\n"
    b"slave3:ip=10.0.0.5,port=6380,state=wait_bgsave,offset=0,lag=0\r\n"
    b"master_repl_offset:18760\r\n"
)


def test_a_replica_whose_lag_reads_minus_one_counts_as_in_sync_and_following() -> None:
    """The server's lag is its cached clock less the last acknowledgement and reads -1 when that
    came within the same second. Counting only digits made such replicas out of sync (a claim
    then waited for fewer replicas than were in sync) and, for the fence, not following (a
    healthy claim UNCONFIRMED: test_idempotency saw a request executed by no thread)."""
    assert in_sync_replicas(VALKEY_INFO) == 2
    assert following_replicas(VALKEY_INFO) == {"10.0.0.3:6379", "10.0.0.2:6379", "10.0.0.5:6380"}
