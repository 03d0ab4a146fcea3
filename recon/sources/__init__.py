"""Where settlement files come from: a local folder or an SFTP folder, and the fetch."""
