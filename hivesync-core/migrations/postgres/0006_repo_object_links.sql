-- What each stored commit or tree names that is stored here too (a commit's tree, a tree's
-- subtrees), as a JSON array of ids: a branch's whole structure is then one recursive query
-- (src/repo/shared.rs). NULL on rows stored before this column: readers fetch what those name a
-- tree level at a time.
ALTER TABLE repo_objects ADD COLUMN links TEXT;
