-- DDL for postgresql, generated from recon/store/tables.py (python -m recon.store.tables postgresql); do not edit by hand.

CREATE TABLE ovo_payments (
	partner_reference_no VARCHAR(64) NOT NULL, 
	reference_no VARCHAR(64), 
	merchant_id VARCHAR(32) NOT NULL, 
	store_id VARCHAR(64), 
	amount NUMERIC(18, 2) NOT NULL, 
	currency VARCHAR(3) DEFAULT 'IDR' NOT NULL, 
	pay_option VARCHAR(16) NOT NULL, 
	status VARCHAR(2) NOT NULL, 
	transaction_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	paid_time TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (partner_reference_no)
);

CREATE INDEX ix_ovo_payments_time ON ovo_payments (transaction_time);

CREATE TABLE ovo_refunds (
	partner_refund_no VARCHAR(64) NOT NULL, 
	original_partner_reference_no VARCHAR(64) NOT NULL, 
	refund_no VARCHAR(64), 
	refund_amount NUMERIC(18, 2) NOT NULL, 
	refund_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	status VARCHAR(2) NOT NULL, 
	PRIMARY KEY (partner_refund_no)
);

CREATE INDEX ix_ovo_refunds_original ON ovo_refunds (original_partner_reference_no);

CREATE INDEX ix_ovo_refunds_refund_no ON ovo_refunds (refund_no);

CREATE INDEX ix_ovo_refunds_time ON ovo_refunds (refund_time);

CREATE TABLE recon_exceptions (
	exception_id BIGSERIAL NOT NULL, 
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

CREATE INDEX ix_recon_ledger_date ON recon_ledger USING brin (merchant_id, settlement_date);

CREATE INDEX ix_recon_ledger_original ON recon_ledger (merchant_id, original_reference_no) WHERE original_reference_no != settle_key;

CREATE INDEX ix_recon_ledger_record ON recon_ledger (merchant_id, record_key) WHERE record_key != settle_key;

CREATE TABLE recon_locks (
	merchant_id VARCHAR(32) NOT NULL, 
	settlement_date DATE NOT NULL, 
	holder VARCHAR(255) NOT NULL, 
	acquired_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	heartbeat_at TIMESTAMP WITH TIME ZONE, 
	PRIMARY KEY (merchant_id, settlement_date)
);

CREATE TABLE recon_runs (
	run_id BIGSERIAL NOT NULL, 
	merchant_id VARCHAR(32) NOT NULL, 
	settlement_date DATE NOT NULL, 
	attempt INTEGER NOT NULL, 
	is_current BOOLEAN NOT NULL, 
	started_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	finished_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	file_name VARCHAR(255) NOT NULL, 
	file_sha256 VARCHAR(64) NOT NULL, 
	file_rows INTEGER NOT NULL, 
	archive_path TEXT, 
	exceptions INTEGER NOT NULL, 
	summary_json TEXT NOT NULL, 
	PRIMARY KEY (run_id)
);

CREATE INDEX ix_recon_runs_date ON recon_runs (merchant_id, settlement_date);
