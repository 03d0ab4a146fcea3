"""What a run hands over: summary.json, the workbook, the emails and their delivery."""
