"""The study exactly as its code ran: each function names the notebook cell it reproduces and lists
where the code departs from the study's own text. Nothing outside this package imports from it, except
the defect-by-defect comparison."""
