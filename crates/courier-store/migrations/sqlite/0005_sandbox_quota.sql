-- Per-user sandbox quotas count a user's live sandboxes at every create
-- (`create_sandbox_within`); without this index that count reads the whole table.
CREATE INDEX sandboxes_user_status ON sandboxes (user_id, status);
