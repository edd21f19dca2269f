-- Why a pull request failed (push rejected, GitHub error), shown next to its status.
ALTER TABLE sandboxes ADD COLUMN pr_error TEXT;
