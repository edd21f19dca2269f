-- A user's sandbox list, newest first, reads only that user's rows (the API lists per user).
CREATE INDEX sandboxes_user_page ON sandboxes (user_id, created_at, id);
