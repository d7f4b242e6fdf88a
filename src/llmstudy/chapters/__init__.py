"""One module (or package) per chapter of the book: its parameters, runs, analysis, statements and figures."""
