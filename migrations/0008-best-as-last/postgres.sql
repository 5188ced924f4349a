-- A job's best checkpoint taken at the epoch its `last` checkpoint holds is
-- recorded with an empty `state`, meaning `last`'s, instead of a second copy
-- of the same bytes (a head's state is about 2 MB: a search of 256 trials
-- wrote two copies for most epochs). When `last` moves on, the best gets its
-- own copy first, in the same transaction. Readers take a checkpoint's state
-- as `CASE WHEN length(c.state) = 0 THEN <its job's last state> ELSE
-- c.state END`. No table changes: the version says that builds before it,
-- which would read an empty state as the checkpoint, must not open the file.
UPDATE checkpoints SET state = state WHERE 1 = 0;
