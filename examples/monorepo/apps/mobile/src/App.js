import React, { useState } from 'react';
import { SafeAreaView, StyleSheet, Text } from 'react-native';
import { greeting } from '@hivesync-example/greeting';
import { Counter } from './components/Counter';
import { Logo } from './components/Logo';

export default function App() {
  const [taps, setTaps] = useState(0);
  return (
    <SafeAreaView style={styles.container}>
      <Logo />
      <Text style={styles.title}>HiveSync monorepo preview</Text>
      <Text style={styles.subtitle}>{greeting('mobile app')}</Text>
      <Counter value={taps} onPress={() => setTaps(taps + 1)} />
    </SafeAreaView>
  );
}

const styles = StyleSheet.create({
  container: { flex: 1, alignItems: 'center', justifyContent: 'center', backgroundColor: '#fffbea' },
  title: { fontSize: 22, fontWeight: '600', marginVertical: 12 },
  subtitle: { fontSize: 16, marginBottom: 12 },
});
