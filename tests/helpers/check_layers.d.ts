/** Types of scripts/check_layers.mjs for the tests. */
export declare const LAYERS: Readonly<Record<string, number>>;
export declare function checkLayers(root: string): string[];
