"""The Lua scripts the bus runs inside Redis, each as one atomic step: why each is one script is
said above it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Runs inside Redis as one unit: a worker that lost its lease writes nothing (fencing), and
# outputs, state and acks land together or not at all. A retried commit (its reply was lost)
# must not apply twice: with acks, the first entry is no longer pending; without (a producer),
# the guard key no longer holds the value the producer read. Every key is declared in KEYS (in
# the order lease?, guard?, ack streams, position streams, publish streams, record streams, state
# keys, hashes), as Redis Cluster requires; ARGV holds the counts and values. A reader that keeps no
# pending entries (it reads with XREAD from its group's position) moves its group instead of
# acking; a retry finds the group already there. On a cluster all of them share one slot. Every
# command takes all its arguments at once (one XACK per stream, one HSET and one HDEL per hash):
# Redis appends each command of a script to the AOF as it ran, so a command per entry or per field
# would repeat the key each time.
# One call applies several commits (the partitions a worker commits at once, bus/together.py),
# laid out by commit_arguments: each is fenced, guarded and retried on its own as if it ran alone,
# in order, and a refused fence or an error stops only its own commit. The reply holds one result
# per commit (0 lost lease, 1 applied, 2 stale guard, or that commit's error).
COMMIT_SCRIPT = """
-- ARGV[first..last] as the trailing arguments of one command per 1,000 (Lua's unpack has a limit).
local function chunked(command, key, group, first, last)
  for from = first, last, 1000 do
    local to = math.min(from + 999, last)
    if group then redis.call(command, key, group, unpack(ARGV, from, to))
    else redis.call(command, key, unpack(ARGV, from, to)) end
  end
end
-- Whether stream KEYS[k]'s group is already at or past id (the commit that moves it there applied).
local function reached(key, group, id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  for _, flat in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local info = {}
    for j = 1, #flat, 2 do info[flat[j]] = flat[j + 1] end
    if info['name'] == group then
      local at_ms, at_seq = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
      at_ms, at_seq, ms, seq = tonumber(at_ms), tonumber(at_seq), tonumber(ms), tonumber(seq)
      return at_ms > ms or (at_ms == ms and at_seq >= seq)
    end
  end
  return false
end
-- One commit, its keys from KEYS[k] and its arguments from ARGV[i].
local function commit(k, i)
  local has_lease, owner, group = ARGV[i], ARGV[i+1], ARGV[i+2]
  if has_lease == '1' then
    if redis.call('GET', KEYS[k]) ~= owner then return 0 end
    k = k + 1
  end
  local has_guard, guard_value = ARGV[i+3], ARGV[i+4]
  if has_guard == '1' then
    if (redis.call('GET', KEYS[k]) or '') ~= guard_value then return 2 end
    k = k + 1
  end
  i = i + 5
  local streams = tonumber(ARGV[i]); i = i + 1
  if streams > 0 and #redis.call('XPENDING', KEYS[k], group, ARGV[i+1], ARGV[i+1], 1) == 0 then return 1 end
  for _ = 1, streams do
    local ids = tonumber(ARGV[i])
    chunked('XACK', KEYS[k], group, i + 1, i + ids)
    k = k + 1; i = i + 1 + ids
  end
  local n = tonumber(ARGV[i]); i = i + 1
  if n > 0 and reached(KEYS[k], group, ARGV[i]) then return 1 end
  for _ = 1, n do
    redis.call('XGROUP', 'SETID', KEYS[k], group, ARGV[i])
    k = k + 1; i = i + 1
  end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    redis.call('XADD', KEYS[k], '*', 'v', ARGV[i], 'type', ARGV[i+1], 'data', ARGV[i+2])
    k = k + 1; i = i + 3
  end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    local fields = tonumber(ARGV[i]); i = i + 1
    redis.call('XADD', KEYS[k], '*', unpack(ARGV, i, i + fields - 1))
    k = k + 1; i = i + fields
  end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do redis.call('SET', KEYS[k], ARGV[i]); k = k + 1; i = i + 1 end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    local fields, gone = tonumber(ARGV[i]), tonumber(ARGV[i+1]); i = i + 2
    chunked('HSET', KEYS[k], nil, i, i + 2 * fields - 1)
    i = i + 2 * fields
    chunked('HDEL', KEYS[k], nil, i, i + gone - 1)
    i = i + gone
    k = k + 1
  end
  return 1
end
-- ARGV[1] commits, each as its key count, its argument count and its arguments. An error in one
-- (a wrong key type, OOM) is its reply: what it wrote before the error stays, as it would alone,
-- and the reply reads as that script's error would, its code first ('ERR ...' when it has none,
-- as Redis 6.2 words it: '... -OOM ...' inside), so the client tells an outage from a bug alike.
local results, k, i = {}, 1, 2
for c = 1, tonumber(ARGV[1]) do
  local keys, args = tonumber(ARGV[i]), tonumber(ARGV[i+1])
  local ok, result = pcall(commit, k, i + 2)
  if ok then results[c] = result
  else
    local message = type(result) == 'table' and result.err or tostring(result)
    if not string.match(message, '^%u+ ') then message = 'ERR ' .. message end
    results[c] = {err = message}
  end
  k = k + keys; i = i + 2 + args
end
return results
"""

Call = tuple[Sequence[Any], Sequence[Any]]  # one commit's keys and arguments (publishing.py builds them)


def commit_arguments(commits: Sequence[Call]) -> tuple[list[Any], list[Any]]:
    """COMMIT_SCRIPT's keys and arguments for ``commits``, applied in this order."""
    keys: list[Any] = []
    args: list[Any] = [len(commits)]
    for commit_keys, commit_args in commits:
        keys += commit_keys
        args += [len(commit_keys), len(commit_args), *commit_args]
    return keys, args


# Publish only if KEYS[1] was not set before (an idempotency key kept for ARGV[1] ms): the check and
# the XADDs are one script, so a retried request can neither publish twice nor be lost in between.
# KEYS[2..] are the streams; ARGV[2..] hold, per stream, a field count and then the field pairs.
PUBLISH_ONCE_SCRIPT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local at = 2
for k = 2, #KEYS do
    local n = tonumber(ARGV[at])
    redis.call('XADD', KEYS[k], '*', unpack(ARGV, at + 1, at + n))
    at = at + n + 1
end
return 1
"""


# XREADGROUP without BLOCK, only for the lease holder (scripts cannot block; waiting is done
# with a plain XREAD by the caller). Returns 0 when the lease is not ours.
FENCED_READ_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local streams = {}
for k = 2, #KEYS do streams[k - 1] = KEYS[k]; streams[#KEYS + k - 2] = ARGV[5] end
return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', unpack(streams))
"""


# XREAD from positions, for the lease holder only (a reader that keeps its position in its group,
# moved by its commit, instead of pending entries). KEYS[1] is the lease, KEYS[2..] the streams,
# ARGV[3..] their positions. Returns 0 when the lease is not ours.
POSITIONED_READ_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local streams = {}
for k = 2, #KEYS do streams[k - 1] = KEYS[k]; streams[#KEYS + k - 2] = ARGV[k + 1] end
return redis.call('XREAD', 'COUNT', ARGV[2], 'STREAMS', unpack(streams)) or {}
"""


# A group that was read with XREADGROUP (a release before positioned readers) hands its pending
# entries over: they were delivered but never committed, so the group moves back to just before
# the oldest of them and they are acked, in one step, and the positioned reader reads them next.
# Fenced by the lease (KEYS[2], ARGV[2]). Returns the new position, or false when nothing was pending.
TAKE_OVER_PENDING_SCRIPT = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return false end
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
if tonumber(summary[1]) == 0 then return false end
local ms, seq = string.match(summary[2], '^(%d+)-(%d+)$')
local before = seq == '0' and string.format('%d-18446744073709551615', tonumber(ms) - 1)
  or string.format('%s-%d', ms, tonumber(seq) - 1)
repeat
  local rows = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000)
  local ids = {}
  for _, row in ipairs(rows) do ids[#ids + 1] = row[1] end
  if #ids > 0 then redis.call('XACK', KEYS[1], ARGV[1], unpack(ids)) end
until #rows < 1000
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], before)
return before
"""


# A dead letter is fenced like a commit: a worker that lost its lease cannot write a second record
# of an entry the new owner is handling. Returns 0 when fenced out.
# One tick of a tick-batch entry (ARGV[7], its index) is recorded without acking the entry unless
# ARGV[8] says so (none of its ticks is left to process); the entry comes back if the worker dies
# before its ack, so a record of that tick already among the last ARGV[9] is not written again.
DEAD_LETTER_SCRIPT = """
if KEYS[3] and redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
local index = ARGV[7]
local record = {'stream', KEYS[1], 'entry_id', ARGV[4], 'group', ARGV[3], 'reason', ARGV[5], 'payload', ARGV[6]}
if index ~= '' then
  for _, row in ipairs(redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', tonumber(ARGV[9]))) do
    local f = {}
    for j = 1, #row[2], 2 do f[row[2][j]] = row[2][j + 1] end
    if f['entry_id'] == ARGV[4] and f['index'] == index and f['group'] == ARGV[3] then record = nil; break end
  end
  if record then record[#record + 1] = 'index'; record[#record + 1] = index end
end
if record then redis.call('XADD', KEYS[2], '*', unpack(record)) end
if index == '' or ARGV[8] == '1' then redis.call('XACK', KEYS[1], ARGV[3], ARGV[4]) end
return 1
"""


# The oldest entry of a stream that some group still needs: its oldest pending entry, or else the
# one after the last delivered, or the one after what its snapshot is as of (the hold hash KEYS[2],
# group -> id, when given: a group that restores a snapshot replays the entries after it). Everything
# older goes (XTRIM MINID ~, whole nodes only, so it is cheap). Run as one script so no group moves
# in between. Not trimmed (returns -1) while a group that must read the stream (ARGV) does not exist
# yet, or when it has no group at all. A hold of a group the stream no longer has is ignored.
TRIM_SCRIPT = """
local info = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(info) ~= 'table' or info.err or #info == 0 then return -1 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local found, oldest_ms, oldest_seq = {}, nil, nil
for _, flat in ipairs(info) do
  local group = {}
  for j = 1, #flat, 2 do group[flat[j]] = flat[j + 1] end
  found[group['name']] = true
  local ms, seq
  if tonumber(group['pending']) > 0 then
    ms, seq = parse(redis.call('XPENDING', KEYS[1], group['name'])[2])
  else
    ms, seq = parse(group['last-delivered-id'])
    seq = seq + 1
  end
  if oldest_ms == nil or ms < oldest_ms or (ms == oldest_ms and seq < oldest_seq) then
    oldest_ms, oldest_seq = ms, seq
  end
end
for _, reader in ipairs(ARGV) do
  if not found[reader] then return -1 end
end
if KEYS[2] then
  local held = redis.call('HGETALL', KEYS[2])
  for j = 1, #held, 2 do
    if found[held[j]] then
      local ms, seq = parse(held[j + 1])
      seq = seq + 1
      if ms < oldest_ms or (ms == oldest_ms and seq < oldest_seq) then oldest_ms, oldest_seq = ms, seq end
    end
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d-%d', oldest_ms, oldest_seq))
"""


# Take a record out of its dead-letter stream and re-publish its entry, as one step: two replays
# running at once cannot both publish it. Returns the new entry id, or nil if the record is gone.
REPLAY_SCRIPT = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""
