"""Settlement file formats: the declaration of a format, OVO's own, and the reader that
interprets any declared format (CSV and XLSX)."""
