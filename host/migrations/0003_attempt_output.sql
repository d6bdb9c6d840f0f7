-- What an attempt wrote to stdout and stderr when captured, up to the
-- attempt's output limit (the rest is counted in a final note).
ALTER TABLE step_attempts ADD COLUMN stdout TEXT;
ALTER TABLE step_attempts ADD COLUMN stderr TEXT;
