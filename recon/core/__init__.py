"""The pure core: result types, schemas, money, the calendar, the categories and their
rules, the match. No files, databases or settings objects."""
