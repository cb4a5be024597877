-- Synapse's own database beside timproxy's, in the same PostgreSQL (run once, when the pgdata
-- volume is created). Synapse requires the C collation and UTF8.
CREATE ROLE synapse LOGIN PASSWORD 'synapse';
CREATE DATABASE synapse OWNER synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
