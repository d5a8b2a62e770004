//! Row results and the report files (CSV or JSON Lines) and summary built from them.
