some avg10=2.92 avg60=1.20 avg300=0.96 total=126973955
full avg10=0.00 avg60=0.00 avg300=0.00 total=45613177
