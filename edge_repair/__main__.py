from edge_repair.cli import main

main()
