-- DDL for mysql, generated from recon/store/tables.py (python -m recon.store.tables mysql); do not edit by hand.

CREATE TABLE ovo_payments (
	partner_reference_no VARCHAR(64) NOT NULL, 
	reference_no VARCHAR(64), 
	merchant_id VARCHAR(32) NOT NULL, 
	store_id VARCHAR(64), 
	amount NUMERIC(18, 2) NOT NULL, 
	currency VARCHAR(3) NOT NULL DEFAULT 'IDR', 
	pay_option VARCHAR(16) NOT NULL, 
	status VARCHAR(2) NOT NULL, 
	transaction_time DATETIME NOT NULL, 
	paid_time DATETIME, 
	PRIMARY KEY (partner_reference_no)
);

CREATE INDEX ix_ovo_payments_time ON ovo_payments (transaction_time);

CREATE TABLE ovo_refunds (
	partner_refund_no VARCHAR(64) NOT NULL, 
	original_partner_reference_no VARCHAR(64) NOT NULL, 
	refund_no VARCHAR(64), 
	refund_amount NUMERIC(18, 2) NOT NULL, 
	refund_time DATETIME NOT NULL, 
	status VARCHAR(2) NOT NULL, 
	PRIMARY KEY (partner_refund_no)
);

CREATE INDEX ix_ovo_refunds_original ON ovo_refunds (original_partner_reference_no);

CREATE INDEX ix_ovo_refunds_refund_no ON ovo_refunds (refund_no);

CREATE INDEX ix_ovo_refunds_time ON ovo_refunds (refund_time);

CREATE TABLE recon_case_events (
	event_id BIGINT NOT NULL AUTO_INCREMENT, 
	case_id VARCHAR(48) NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(255) NOT NULL, 
	action VARCHAR(16) NOT NULL, 
	from_state VARCHAR(20), 
	to_state VARCHAR(20) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	resolution VARCHAR(32) NOT NULL, 
	note TEXT NOT NULL, 
	source VARCHAR(64) NOT NULL, 
	due_date DATE, 
	PRIMARY KEY (event_id)
);

CREATE INDEX ix_recon_case_events_case ON recon_case_events (case_id, event_id);

CREATE TABLE recon_case_numbers (
	merchant_id VARCHAR(32) NOT NULL, 
	last_number INTEGER NOT NULL, 
	PRIMARY KEY (merchant_id)
);

CREATE TABLE recon_case_occurrences (
	case_id VARCHAR(48) NOT NULL, 
	merchant_id VARCHAR(32) NOT NULL, 
	settlement_date DATE NOT NULL, 
	line_no INTEGER NOT NULL, 
	run_id BIGINT NOT NULL, 
	amount_at_risk NUMERIC(18, 2) NOT NULL, 
	delta NUMERIC(18, 2), 
	reason TEXT NOT NULL, 
	CONSTRAINT pk_recon_case_occurrences PRIMARY KEY (case_id, settlement_date, line_no)
);

CREATE INDEX ix_recon_case_occurrences_date ON recon_case_occurrences (merchant_id, settlement_date);

CREATE TABLE recon_cases (
	case_id VARCHAR(48) NOT NULL, 
	merchant_id VARCHAR(32) NOT NULL, 
	category VARCHAR(32) NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	case_key VARCHAR(160) NOT NULL, 
	first_seen DATE NOT NULL, 
	last_seen DATE NOT NULL, 
	state VARCHAR(20) NOT NULL, 
	owner VARCHAR(255) NOT NULL, 
	resolution VARCHAR(32) NOT NULL, 
	note TEXT NOT NULL, 
	proposed_by VARCHAR(255) NOT NULL, 
	claim_due DATE, 
	raised_on DATE, 
	version INTEGER NOT NULL, 
	amount_at_risk NUMERIC(18, 2) NOT NULL, 
	delta NUMERIC(18, 2), 
	PRIMARY KEY (case_id), 
	CONSTRAINT uq_recon_cases_key UNIQUE (merchant_id, category, kind, case_key)
);

CREATE INDEX ix_recon_cases_state ON recon_cases (merchant_id, state);

CREATE TABLE recon_exceptions (
	exception_id BIGINT NOT NULL AUTO_INCREMENT, 
	merchant_id VARCHAR(32) NOT NULL, 
	settlement_date DATE NOT NULL, 
	run_id BIGINT NOT NULL, 
	category VARCHAR(32) NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	line_no INTEGER, 
	merchant_invoice VARCHAR(255), 
	refund_invoice VARCHAR(255), 
	ovo_reference_no VARCHAR(255), 
	record_key VARCHAR(64), 
	record_date DATE, 
	file_amount NUMERIC(18, 2), 
	record_amount NUMERIC(18, 2), 
	delta NUMERIC(18, 2), 
	reason TEXT NOT NULL, 
	flags TEXT, 
	state VARCHAR(8), 
	closed_by_date DATE, 
	closed_by_line INTEGER, 
	PRIMARY KEY (exception_id)
);

CREATE INDEX ix_recon_exceptions_closed ON recon_exceptions (merchant_id, closed_by_date);

CREATE INDEX ix_recon_exceptions_date ON recon_exceptions (merchant_id, settlement_date);

CREATE INDEX ix_recon_exceptions_state ON recon_exceptions (merchant_id, category, state);

CREATE TABLE recon_ledger (
	merchant_id VARCHAR(32) NOT NULL, 
	settlement_date DATE NOT NULL, 
	run_id BIGINT NOT NULL, 
	kind VARCHAR(8) NOT NULL, 
	settle_key VARCHAR(128) NOT NULL, 
	record_key VARCHAR(64) NOT NULL, 
	original_reference_no VARCHAR(64) NOT NULL, 
	amount NUMERIC(18, 2) NOT NULL, 
	line_no INTEGER NOT NULL, 
	CONSTRAINT pk_recon_ledger PRIMARY KEY (merchant_id, settle_key, settlement_date, line_no)
);

CREATE INDEX ix_recon_ledger_date ON recon_ledger (merchant_id, settlement_date);

CREATE INDEX ix_recon_ledger_original ON recon_ledger (merchant_id, original_reference_no);

CREATE INDEX ix_recon_ledger_record ON recon_ledger (merchant_id, record_key);

CREATE TABLE recon_locks (
	merchant_id VARCHAR(32) NOT NULL, 
	settlement_date DATE NOT NULL, 
	holder VARCHAR(255) NOT NULL, 
	acquired_at DATETIME NOT NULL, 
	heartbeat_at DATETIME, 
	PRIMARY KEY (merchant_id, settlement_date)
);

CREATE TABLE recon_runs (
	run_id BIGINT NOT NULL AUTO_INCREMENT, 
	merchant_id VARCHAR(32) NOT NULL, 
	settlement_date DATE NOT NULL, 
	attempt INTEGER NOT NULL, 
	is_current BOOL NOT NULL, 
	started_at DATETIME NOT NULL, 
	finished_at DATETIME NOT NULL, 
	file_name VARCHAR(255) NOT NULL, 
	file_sha256 VARCHAR(64) NOT NULL, 
	file_rows INTEGER NOT NULL, 
	archive_path TEXT, 
	exceptions INTEGER NOT NULL, 
	summary_json TEXT NOT NULL, 
	PRIMARY KEY (run_id)
);

CREATE INDEX ix_recon_runs_date ON recon_runs (merchant_id, settlement_date);
